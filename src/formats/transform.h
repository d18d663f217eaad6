// Input transforms as an ordered chain (FAISS's VectorTransform chain): a quantized layer may
// store its weight in a transformed input space, y = Q T(x) with T = T_k ... T_1, and every
// stage is one object that maps activations forward, maps weight rows back, stores itself by
// name and loads back by that name. The stages today: a per-channel scale (AWQ), a permutation
// (GPTQ act-order, LoPRo importance order) and a block Walsh-Hadamard rotation (LoPRo); an
// activation quantizer (per token or per tensor) is one more stage of the same shape.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/registry.h"
#include "model/linear.h"

namespace lrq {

class TransformStage {
 public:
  virtual ~TransformStage() = default;
  /// The name the chain stores ("scale", "perm", "hadamard").
  virtual std::string_view name() const = 0;
  /// out = T_k(x) for activations x (T x in, F32) on the stage's device; out does not alias x.
  virtual void apply(const Tensor& x, const Tensor& out) const = 0;
  /// Whether apply() may run with out == x (the chain then skips a copy).
  virtual bool in_place() const { return false; }
  /// W <- W T_k in place, for W (out x in, F32, any device): a weight in the stage's output
  /// space mapped to its input space, so W T_k x = W' x' with x' = T_k x.
  virtual void unapply_rows(const Tensor& W) const = 0;
  /// Stored bytes of this stage for `in` input channels.
  virtual size_t storage_bytes(int64_t in) const = 0;
  /// Suffix for Linear::describe (" +perm").
  virtual std::string describe() const = 0;
  /// A copy whose tensors live on `device`.
  virtual std::shared_ptr<const TransformStage> to(Device device) const = 0;
  /// Appends the stage's tensors as "<prefix>.<part>" and its fields to the layer's metadata.
  virtual void save(const std::string& prefix, nlohmann::json& meta, NamedTensors& out) const = 0;
  /// Whether it fits a layer of `in` input channels (a permutation of that length...).
  virtual bool fits(int64_t in) const = 0;
};

/// x_j / s_j with s F16 [in].
class ScaleStage final : public TransformStage {
 public:
  explicit ScaleStage(Tensor scale) : s_(std::move(scale)) {}
  std::string_view name() const override { return "scale"; }
  void apply(const Tensor& x, const Tensor& out) const override;
  void unapply_rows(const Tensor& W) const override;
  size_t storage_bytes(int64_t in) const override { return 2 * size_t(in); }
  std::string describe() const override { return " +scale"; }
  std::shared_ptr<const TransformStage> to(Device device) const override;
  void save(const std::string& prefix, nlohmann::json& meta, NamedTensors& out) const override;
  bool fits(int64_t in) const override { return s_.numel() == in; }
  const Tensor& scale() const { return s_; }

 private:
  Tensor s_;
};

/// (P x)_i = x_perm[i]; stored as U16 below 65536 channels, else I32.
class PermuteStage final : public TransformStage {
 public:
  /// `perm` must be a permutation of 0..n-1 (checked by the loader, asserted here).
  explicit PermuteStage(std::vector<int32_t> perm, Device device = Device::CPU);
  std::string_view name() const override { return "perm"; }
  void apply(const Tensor& x, const Tensor& out) const override;
  void unapply_rows(const Tensor& W) const override;
  size_t storage_bytes(int64_t in) const override { return (in <= 65536 ? 2 : 4) * size_t(in); }
  std::string describe() const override { return " +perm"; }
  std::shared_ptr<const TransformStage> to(Device device) const override;
  void save(const std::string& prefix, nlohmann::json& meta, NamedTensors& out) const override;
  bool fits(int64_t in) const override { return int64_t(perm_.size()) == in; }
  const std::vector<int32_t>& perm() const { return perm_; }
  /// The permutation as I32 [n] on the stage's device (the gather's index).
  const Tensor& index() const { return index_; }

 private:
  std::vector<int32_t> perm_;
  Tensor index_;
};

/// A normalized Walsh-Hadamard transform on every block of `block` channels after the first
/// `skip` blocks (its own inverse).
class HadamardStage final : public TransformStage {
 public:
  HadamardStage(int64_t block, int64_t skip) : block_(block), skip_(skip) {}
  std::string_view name() const override { return "hadamard"; }
  void apply(const Tensor& x, const Tensor& out) const override;
  bool in_place() const override { return true; }
  void unapply_rows(const Tensor& W) const override;
  size_t storage_bytes(int64_t) const override { return 0; }
  std::string describe() const override { return " +wht" + std::to_string(block_); }
  std::shared_ptr<const TransformStage> to(Device) const override;
  void save(const std::string& prefix, nlohmann::json& meta, NamedTensors& out) const override;
  bool fits(int64_t in) const override;
  int64_t block() const { return block_; }
  int64_t skip() const { return skip_; }

 private:
  int64_t block_, skip_;
};

/// T = the stages applied in order. Copies share the (immutable) stages.
class InputTransform {
 public:
  InputTransform& then(std::shared_ptr<const TransformStage> stage);
  InputTransform& scale(Tensor s) { return then(std::make_shared<ScaleStage>(std::move(s))); }
  InputTransform& permute(std::vector<int32_t> p) {
    return then(std::make_shared<PermuteStage>(std::move(p)));
  }
  InputTransform& hadamard(int64_t block, int64_t skip) {
    return then(std::make_shared<HadamardStage>(block, skip));
  }

  bool empty() const { return stages_.empty(); }
  const std::vector<std::shared_ptr<const TransformStage>>& stages() const { return stages_; }
  /// The first stage of type S, or null.
  template <class S>
  const S* find() const {
    for (const auto& s : stages_)
      if (auto* p = dynamic_cast<const S*>(s.get())) return p;
    return nullptr;
  }

  /// xt = T(x) (both T x in, F32, one device; xt a handle written through). Adjacent scale and
  /// permutation stages run as one gather.
  void apply(const Tensor& x, const Tensor& xt) const;
  /// Wt <- Wt T in place (out x in, F32): a weight in T's output space mapped back to x's.
  void unapply_rows(const Tensor& Wt) const;
  size_t storage_bytes(int64_t in) const;
  std::string describe() const;
  InputTransform to(Device device) const;
  bool fits(int64_t in) const;
  /// The stages' tensors and fields, and "transforms": their names in order.
  void save(const std::string& prefix, nlohmann::json& meta, NamedTensors& out) const;
  /// The chain a layer's metadata describes. Without a "transforms" list (format_version 1)
  /// the stages present are read in the order they were applied then: scale, perm, hadamard.
  static InputTransform load(const LayerSource& src);

 private:
  std::vector<std::shared_ptr<const TransformStage>> stages_;
};

/// Reads a stored stage back; registered per name (LRQ_REGISTER_TRANSFORM).
using TransformLoader = std::shared_ptr<const TransformStage> (*)(const LayerSource& src);
bool register_transform(const std::string& name, TransformLoader loader);
#define LRQ_REGISTER_TRANSFORM(ident, name, loader) \
  [[maybe_unused]] static const bool lrq_transform_##ident = ::lrq::register_transform(name, loader)

/// Wt <- Wt T (InputTransform::unapply_rows), the spelling methods use.
inline void untransform_rows(const InputTransform& t, const Tensor& Wt) { t.unapply_rows(Wt); }

}  // namespace lrq
