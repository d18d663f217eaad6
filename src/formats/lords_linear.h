// LordsLinear: a projection stored as LoRDS (arXiv 2601.22716) keeps codebook codes and a scale
// matrix of low rank, S = B A, instead of block scales:
//
//   W_ij = codebook[c_ij] * (B_i . A_j)      B F16 [out, r], A F16 [r, in], codebook F32 [2^b]
//
// The codes use the packed layout of formats/packed_weight.h (one group spanning the row); S is
// never stored or materialized whole: the seam's lords_* ops form each row (CPU) or tile (GPU)
// of it inside the decode. Bits per weight, from the bytes: b + 16 r (out + in) / (out in), plus
// the 2^b F32 codebook per layer. The layer kind registered for it is "lords".
#pragma once
#include <string>
#include <string_view>

#include "backend/ops.h"
#include "formats/registry.h"
#include "model/linear.h"

namespace lrq {

class LordsLinear final : public Linear {
 public:
  /// Packs codes U8 [out, in] (each < 2^bits, in a multiple of 32) with factors B [out, r] and
  /// A [r, in] (F32 or F16; rounded to F16) and the codebook F32 [2^bits], all on one device.
  /// Throws Error on any inconsistency or a non-finite value.
  static std::unique_ptr<LordsLinear> pack(const Tensor& codes, const Tensor& B, const Tensor& A,
                                           const Tensor& codebook, int bits);
  /// Rebuilds from stored tensors after checking every shape, dtype and value (finite B, A and
  /// codebook, ascending codebook); errors name `where`.
  LordsLinear(ops::Lords w, std::string_view where);

  void forward(const Tensor& x, const Tensor& y) const override;
  Tensor dequantize() const override;
  size_t storage_bytes() const override;
  std::string describe() const override;
  Device device() const override { return w_.codes.device(); }
  std::unique_ptr<Linear> to(Device device) const override;
  nlohmann::json save(const std::string& prefix, NamedTensors& out) const override;
  static std::unique_ptr<LordsLinear> load(const LayerSource& src);

  const ops::Lords& view() const { return w_; }
  int bits() const { return w_.bits; }
  int64_t rank() const { return w_.rank(); }
  /// The codes, unpacked: U8 [out, in]. CPU only.
  Tensor unpack_codes() const;

 private:
  // to()'s copy of a checked layer: nothing to check again, and nothing may be read, since under
  // a CopyQueue capture the bytes are still in flight (backend/memory.h).
  struct Copied {};
  LordsLinear(ops::Lords w, Copied);

  ops::Lords w_;
};

/// Rank whose factors cost what block scales of `blk` columns do: floor(m n / (blk (m + n))),
/// at least 1.
int64_t lords_matched_rank(int64_t rows, int64_t cols, int64_t blk);

}  // namespace lrq
