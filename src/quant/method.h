// The two kinds of quantization method, and the registry that makes each one file.
//
//   Method       per layer: a weight and its input statistics in, a quantized Linear out
//                (rtn, gptq, awq, nf, flrq, lopro). The calibration runner feeds it one
//                projection at a time, in dependency order.
//   BlockMethod  per transformer block: the block, its (quantized-model) inputs and, when it
//                asks, the full-precision block's outputs as targets in; all projections of the
//                block out at once (LRQ and anything that reconstructs a block's output).
//
// Each method file declares its options, parses them once into a typed struct, and registers
// itself (LRQ_REGISTER_METHOD); methods live one per file in quant/methods/.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/stats.h"
#include "model/linear.h"
#include "quant/recipe.h"

namespace lrq {

class Model;

struct QuantJob {
  std::string layer;    // full name, for messages and reports
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

/// One block handed to a BlockMethod. Tensors live on the block's device.
struct BlockJob {
  /// Block `layer` holds its full-precision projections. A method may swap candidate layers
  /// into it (Block::proj) to run block_forward on them, and puts the originals back before
  /// returning.
  Model& model;
  int64_t layer = 0;
  /// The block's inputs, one T x hidden tensor per calibration window: the outputs of the
  /// already-quantized blocks before it (or of the full-precision ones with --fp-inputs).
  const std::vector<Tensor>& inputs;
  /// The full-precision block's outputs on those inputs (empty unless needs().targets).
  const std::vector<Tensor>& targets;
  uint64_t seed = 0;  // the run's seed; mix in the layer name with layer_seed()
};

class BlockMethod {
 public:
  virtual ~BlockMethod() = default;
  struct Needs {
    bool targets = true;  // the full-precision block's outputs on the block's inputs
  };
  virtual Needs needs() const { return {}; }
  /// Quantizes every projection of the block: short names ("self_attn.q_proj", ...) with
  /// their layers (on the block's device or the CPU; the runner moves them) and report fields.
  /// Projections the recipe keeps `fp` may be left out.
  virtual std::vector<std::pair<std::string, Quantized>> quantize_block(
      const BlockJob& job) const = 0;
  virtual bool runs_on(Device device) const { return device == Device::CPU; }
};

/// What a method file registers: its option table (what the recipe parser accepts, the help),
/// its place in `lrquant recipes`, and one factory of either kind (modifier stages have none).
struct MethodEntry {
  MethodSpec spec;
  int order = 0;
  std::unique_ptr<Method> (*layer)(const Stage& s) = nullptr;
  std::unique_ptr<BlockMethod> (*block)(const Stage& s) = nullptr;
};
/// Adds a method; a name registered twice aborts at start-up.
bool register_method(MethodEntry entry);
#define LRQ_REGISTER_METHOD(ident, ...) \
  [[maybe_unused]] static const bool lrq_method_##ident = ::lrq::register_method(__VA_ARGS__)

/// Whether the recipe's base method works on whole blocks.
bool is_block_method(const Recipe& recipe);
/// The per-layer method of a recipe's base stage with its modifier stages composed on top;
/// an Error for a block method.
std::unique_ptr<Method> make_method(const Recipe& recipe);
/// The block method of a recipe's base stage; an Error for a per-layer method.
std::unique_ptr<BlockMethod> make_block_method(const Recipe& recipe);

/// A method's per-layer seed: the run's seed mixed with a hash of the layer's full name, so
/// every projection draws its own sketches.
uint64_t layer_seed(uint64_t run_seed, const std::string& layer_name);

}  // namespace lrq
