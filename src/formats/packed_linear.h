// PackedLinear: the stored form of every quantized projection, whatever method produced it.
//
//   y = Q · T(x) + sum_k L_k (R_k x)
//
// Q is a PackedWeight in a transformed input space; T is an ordered chain of input transforms
// (formats/transform.h: channel scale, permutation, block Hadamard). The low-rank branch is a
// list of parts so that mixed precision factors (fp16 leading ranks, int8 later ranks) are just
// two parts. Methods compose these pieces; the layer kind registered for it is "packed".
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/linear.h"
#include "formats/packed_weight.h"
#include "formats/registry.h"
#include "formats/transform.h"

namespace lrq {

/// One low-rank part. F16 factors, or I8 factors with an F16 scale per row (of L and of R).
struct LowRankPart {
  Tensor L, R;                // out x r, r x in
  Tensor L_scale, R_scale;    // F16 [out], [r] when the factors are I8
  Tensor L_f32, R_f32;        // runtime expansions of I8 factors (not stored)
  /// A copy with every tensor on `device`.
  LowRankPart to(Device device) const;
  int64_t rank() const { return R.dim(0); }
  size_t storage_bytes() const;
  /// Builds an F16 part from F32 factors, or an I8 one with per-row absmax scales.
  static LowRankPart from_f32(const Tensor& L, const Tensor& R, bool int8);
  /// F32 copies of the factors, as stored (after rounding). CPU only.
  std::pair<Tensor, Tensor> to_f32() const;
};

/// A quantized layer with a low-rank branch beside its quantized matrix, y = Q T(x) + sum_k
/// L_k (R_k x): the packed kind and the ggml kind (formats/ggml_linear.h) differ only in Q. What
/// adds or reads the branch (the lr stage, FLRQ, the LoRA adapter export) sees only this.
class LowRankLinear : public Linear {
 public:
  const InputTransform& transform() const { return t_; }
  const std::vector<LowRankPart>& low_rank() const { return lr_; }
  int64_t rank() const;
  /// The same quantized matrix and transform with the branch `parts` instead (on the layer's
  /// device).
  virtual std::unique_ptr<LowRankLinear> with_low_rank(std::vector<LowRankPart> parts) const = 0;
  /// Applies T to x (T x in) into xt (T x in), on the layer's device. Exposed for methods that
  /// quantize in T's space.
  void apply_transform(const Tensor& x, const Tensor& xt) const;

 protected:
  /// Moves the transform and the parts to `dev` (int8 parts get their F32 expansions).
  LowRankLinear(int64_t in, int64_t out, Device dev, InputTransform t,
                std::vector<LowRankPart> lr);
  /// R_k x for every part, paired with L_k (F32 or F16), on x's device.
  std::vector<LowRankTerm> low_rank_inputs(const Tensor& x) const;
  size_t transform_and_low_rank_bytes() const;
  /// The transform stages and the parts as "<prefix>.lr<k>.{L,R[,L_scale,R_scale]}" with
  /// meta["lowrank"] = [{rank, dtype}].
  void save_transform_and_low_rank(const std::string& prefix, nlohmann::json& meta,
                                   NamedTensors& out) const;
  /// The parts save_transform_and_low_rank() wrote, checked against the layer's widths.
  static std::vector<LowRankPart> load_low_rank(const LayerSource& src);

  InputTransform t_;
  std::vector<LowRankPart> lr_;
};

class PackedLinear final : public LowRankLinear {
 public:
  /// The input scale and the low-rank parts move to q's device (the layer's device).
  PackedLinear(PackedWeight q, InputTransform t, std::vector<LowRankPart> lr);
  void forward(const Tensor& x, const Tensor& y) const override;
  Tensor dequantize() const override;
  size_t storage_bytes() const override;
  std::string describe() const override;
  Device device() const override { return q_.device(); }
  std::unique_ptr<Linear> to(Device device) const override;
  std::unique_ptr<LowRankLinear> with_low_rank(std::vector<LowRankPart> parts) const override;

  const PackedWeight& packed() const { return q_; }

  /// Kind "packed": format, bits, group, the transform chain and the low-rank ranks.
  nlohmann::json save(const std::string& prefix, NamedTensors& out) const override;
  /// Rebuilds a layer from its metadata and stored tensors (the registry's loader for
  /// "packed"); every inconsistency is an Error naming the checkpoint and the layer.
  static std::unique_ptr<PackedLinear> load(const LayerSource& src);

 private:
  PackedWeight q_;
};

/// W (out x in, F32, any device; the parts on any device) += sum_k L_k R_k of the parts, with
/// the factors as stored.
void add_low_rank(const std::vector<LowRankPart>& parts, const Tensor& W);

}  // namespace lrq
