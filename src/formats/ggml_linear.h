// GgmlLinear: a projection whose quantized matrix is stored as ggml block bytes, so that
// `lrquant export` copies them into a GGUF tensor unchanged and llama.cpp decodes the values
// lrquant computed with. Used for the K-quants (Q2_K..Q6_K), whose super-blocks of 256 weights
// with quantized sub-block scales do not fit the packed format's chunk layout.
//
//   y = Q T(x) + sum_k L_k (R_k x)      (LowRankLinear; Q decoded by io/gguf.h's decoders)
//
// Stored tensor "<prefix>.qblocks": U8 [out, row_bytes(type, in)], row r holding row r of W as
// in/256 consecutive blocks, exactly as a GGUF file holds an [in, out] tensor of that type.
// Layer kind "ggml" with metadata {"type": ggml's type name, "in", "out"} plus the transform
// chain and the low-rank parts as the packed kind stores them.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "formats/packed_linear.h"
#include "io/gguf.h"

namespace lrq {

class GgmlLinear final : public LowRankLinear {
 public:
  /// blocks: U8 [rows, row_bytes(type, cols)] on the CPU; type one lrquant decodes. Throws Error
  /// naming `where` on any inconsistency.
  GgmlLinear(gguf::Type type, Tensor blocks, int64_t cols, InputTransform t,
             std::vector<LowRankPart> lr, const std::string& where = "GgmlLinear");
  void forward(const Tensor& x, const Tensor& y) const override;
  Tensor dequantize() const override;
  size_t storage_bytes() const override;
  std::string describe() const override;
  Device device() const override { return Device::CPU; }
  /// CPU only: the decoders are the scalar ones of io/gguf.cpp.
  std::unique_ptr<Linear> to(Device device) const override;
  std::unique_ptr<LowRankLinear> with_low_rank(std::vector<LowRankPart> parts) const override;
  nlohmann::json save(const std::string& prefix, NamedTensors& out) const override;
  static std::unique_ptr<GgmlLinear> load(const LayerSource& src);

  gguf::Type type() const { return type_; }
  const Tensor& blocks() const { return blocks_; }
  /// The quantized matrix alone (no transform, no branch): F32 [out, in].
  Tensor dequantize_blocks() const;

 private:
  gguf::Type type_;
  Tensor blocks_;
};

}  // namespace lrq
