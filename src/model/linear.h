// Linear: the one interface through which the model calls every projection.
//
// The model never knows how a projection is stored. A dense checkpoint weight, a packed 3-bit
// GPTQ matrix with a low-rank branch, or a rotated LoPRo residual all present the same three
// operations, so the calibration runner can swap layers in place and eval/generate run any
// quantized checkpoint unchanged.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"

namespace lrq {

/// Named tensors a layer hands the checkpoint writer ("<layer>.qcodes", ...).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Linear {
 public:
  virtual ~Linear() = default;
  /// y[T x out] = x[T x in] * W^T (+ bias when the layer has one). F32 activations.
  virtual void forward(const Tensor& x, const Tensor& y) const = 0;
  /// The effective weight as F32 [out x in] (the reference the fast path must agree with).
  virtual Tensor dequantize() const = 0;
  /// Exact bytes this layer stores (codes, scales, factors, permutations; not the bias).
  virtual size_t storage_bytes() const = 0;
  /// Short description for reports ("dense bf16", "gptq w3g128 + lr r16").
  virtual std::string describe() const = 0;
  /// Where the layer's tensors live; forward() takes x and y there.
  virtual Device device() const = 0;
  /// A copy of this layer with every tensor on `device` (tensors already there are shared).
  virtual std::unique_ptr<Linear> to(Device device) const = 0;
  /// Appends this layer's tensors as "<prefix>.<part>" (on the layer's device; the writer
  /// copies them to the host) and returns its metadata for quantization_config.layers, tagged
  /// with the "kind" that formats/registry.h loads it back by; null for a layer stored as a
  /// plain checkpoint weight (dense), which the model's own loader reads.
  virtual nlohmann::json save(const std::string& prefix, NamedTensors& out) const = 0;
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  double bits_per_weight() const { return 8.0 * double(storage_bytes()) / double(in_ * out_); }

 protected:
  Linear(int64_t in, int64_t out) : in_(in), out_(out) {}
  int64_t in_, out_;
};

/// A checkpoint weight used as is (F32/F16/BF16, possibly memory-mapped), optional bias.
class DenseLinear final : public Linear {
 public:
  explicit DenseLinear(Tensor W, Tensor bias = {});
  void forward(const Tensor& x, const Tensor& y) const override;
  Tensor dequantize() const override;
  size_t storage_bytes() const override { return W_.nbytes(); }
  std::string describe() const override;
  Device device() const override { return W_.device(); }
  std::unique_ptr<Linear> to(Device device) const override;
  nlohmann::json save(const std::string& prefix, NamedTensors& out) const override;
  const Tensor& weight() const { return W_; }
  const Tensor& bias() const { return bias_; }

 private:
  Tensor W_, bias_;
};

/// y[i] = layers[i](x) for projections that read one input (q/k/v, gate/up): when all are dense
/// and unbiased they go through ops::linear_many (on the GPU's BF16 path x is rounded once).
void forward_shared_input(const Tensor& x, std::initializer_list<const Linear*> layers,
                          std::initializer_list<Tensor> y);

/// Adds a dense bias to another layer's output (Qwen2's q/k/v biases beside a quantized weight).
class BiasedLinear final : public Linear {
 public:
  BiasedLinear(std::unique_ptr<Linear> inner, Tensor bias);
  void forward(const Tensor& x, const Tensor& y) const override;
  Tensor dequantize() const override { return inner_->dequantize(); }
  size_t storage_bytes() const override { return inner_->storage_bytes(); }
  std::string describe() const override { return inner_->describe() + " +bias"; }
  Device device() const override { return inner_->device(); }
  std::unique_ptr<Linear> to(Device device) const override;
  /// The bias under the checkpoint's own name beside the inner layer's tensors.
  nlohmann::json save(const std::string& prefix, NamedTensors& out) const override;
  const Linear& inner() const { return *inner_; }
  const Tensor& bias() const { return bias_; }

 private:
  std::unique_ptr<Linear> inner_;
  Tensor bias_;
};

}  // namespace lrq
