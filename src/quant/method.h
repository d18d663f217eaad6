// The one interface every quantization method implements: a weight matrix and its input
// statistics in, a quantized Linear out. Methods live one per file in quant/methods/.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "calib/stats.h"
#include "model/linear.h"
#include "quant/recipe.h"

namespace lrq {

struct QuantJob {
  std::string layer;    // full name, for messages and reports
  const Recipe* recipe;
  uint64_t seed = 0;
};

struct Quantized {
  std::unique_ptr<Linear> layer;
  nlohmann::json extra = nlohmann::json::object();  // method-specific report fields
};

class Method {
 public:
  virtual ~Method() = default;
  /// W: F32 [out x in] on the CPU or GPU; stats finalized. Never modifies W.
  virtual Quantized quantize(const Tensor& W, const SiteStats& stats,
                             const QuantJob& job) const = 0;
  /// Whether quantize() accepts W and stats on `device`. The pipeline hands a method that
  /// cannot run on the GPU CPU copies of W and H (and moves its result back), so a method
  /// gains a GPU path by overriding this, without the pipeline knowing which it is.
  virtual bool runs_on(Device device) const { return device == Device::CPU; }
};

/// The method of a recipe's base stage, configured from its options (registry in methods.cpp).
std::unique_ptr<Method> make_method(const Recipe& recipe);

}  // namespace lrq
