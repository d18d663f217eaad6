// PackedWeight: a quantized matrix W [rows = out, cols = in] stored as bit-packed integer codes
// with one fp16 scale (and, for the affine format, one fp16 offset) per (row, group of `group`
// consecutive input columns). It is plain data -- four tensors and three numbers -- so the
// checkpoint writer saves the tensors as they are and from_tensors() rebuilds (and validates)
// the object from a checkpoint.
//
// Value of code c in row r, group g (s = scales[r, g], o = offsets[r, g]):
//   Affine:    c * s + o                  c in 0..2^b-1; an asymmetric min/max grid with integer
//                                          zero point z stores o = -z * s (rounded to fp16).
//   Symmetric: (c - 2^(b-1)) * s          levels -2^(b-1) .. 2^(b-1)-1 times s; no offsets.
//   Codebook:  codebook[c] * s            codebook F32 [2^b] (NormalFloat), s = block absmax.
// dequantize() evaluates exactly these expressions in fp32 (c * s is exact in fp32, so the
// affine value is rounded once).
//
// Bit layout (formats/format_traits.h pins the chunk facts and the storage arithmetic). Each
// row is cols/32 chunks of 32 consecutive values, 4*b bytes per chunk (no padding, so bits per
// weight = b + 16/group, +16/group for offsets). Inside a chunk, value k:
//   b = 8: byte k.
//   b = 4: byte k % 16, low nibble for k < 16, high nibble for k >= 16.
//   b = 2: byte k % 8, bits 2*(k/8) .. 2*(k/8)+1.
//   b = 3: bits 12*(k % 8) + 3*(k / 8) .. +2 of the chunk read as a 96-bit little-endian integer.
// Why: zero-extending 8 packed bytes into the 8 32-bit lanes of an AVX2 register (one
// vpmovzxbd from memory; at 3 bits one byte shuffle of the 12 bytes plus a variable shift)
// leaves in lane j the fields of values j, j+8, j+16, j+24 (at 4 bits, of j and j+16 from the
// first 8 bytes, j+8 and j+24 from the next 8), so each run of 8 consecutive values then costs
// one shift and one mask, with no cross-lane work. No field straddles a lane, and group
// boundaries are chunk boundaries.
//
// The kernels are the seam's packed ops (backend/op_list.h: packed_encode, packed_dequantize,
// packed_matmul); this class owns the tensors, validates them and describes them to the ops.
#pragma once
#include <cstdint>
#include <span>
#include <string_view>

#include "backend/ops.h"
#include "core/tensor.h"
#include "formats/format_traits.h"

namespace lrq {

/// An extra term h L^T that PackedWeight::matmul adds to its output (ops::LowRankTerm).
using ops::LowRankTerm;

class PackedWeight {
 public:
  PackedWeight() = default;

  /// Packs unpacked codes U8 [rows, cols] (each < 2^bits) with scales F16 [rows, cols/group],
  /// offsets F16 [rows, cols/group] (Affine only, else undefined) and codebook F32 [2^bits]
  /// (Codebook only, else undefined), all on one device; the result lives there (on the GPU
  /// the codes are encoded by a kernel and only the checks' verdicts come to the host). Throws
  /// Error on any inconsistency.
  static PackedWeight pack(const Tensor& codes, const Tensor& scales, const Tensor& offsets,
                           const Tensor& codebook, int bits, int64_t group, QuantFormat format);

  /// Rebuilds from stored tensors: packed codes U8 [rows, cols*bits/8] plus the tensors above
  /// (shared, not copied). Checks every shape and dtype, that all are on the codes' device and
  /// that scales, offsets and codebook are finite; throws Error("<where>: <problem>") otherwise.
  /// Checkpoints are loaded on the CPU and moved with to().
  static PackedWeight from_tensors(const Tensor& packed_codes, const Tensor& scales,
                                   const Tensor& offsets, const Tensor& codebook, int bits,
                                   int64_t group, QuantFormat format, std::string_view where);

  bool defined() const { return codes_.defined(); }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int bits() const { return bits_; }
  int64_t group() const { return group_; }
  int64_t ngroups() const { return cols_ / group_; }
  QuantFormat format() const { return format_; }
  const Tensor& codes() const { return codes_; }        // U8 [rows, cols*bits/8]
  const Tensor& scales() const { return scales_; }      // F16 [rows, ngroups]
  const Tensor& offsets() const { return offsets_; }    // F16 [rows, ngroups] or undefined
  const Tensor& codebook() const { return codebook_; }  // F32 [2^bits] or undefined

  /// Exact bytes of all stored tensors.
  size_t storage_bytes() const;
  /// storage_bytes() * 8 / (rows * cols).
  double bits_per_weight() const;

  /// Where the tensors live (all four on one device).
  Device device() const { return codes_.device(); }
  /// A copy with every tensor on `device` (no re-validation: this one was validated).
  PackedWeight to(Device device) const;

  /// The codes, unpacked: U8 [rows, cols]. CPU only.
  Tensor unpack_codes() const;
  /// The represented matrix: F32 [rows, cols] on the weight's device.
  Tensor dequantize() const;
  /// Rows [begin, end) of dequantize() into out (F32, (end - begin) * cols values). CPU only.
  void dequantize_rows(int64_t begin, int64_t end, float* out) const;
  /// y[T, rows] (+)= x[T, cols] * W^T + sum_k terms[k].h * terms[k].L^T without materializing
  /// W (ops::packed_matmul): a fused decode-and-dot kernel for T <= 8, row slabs dequantized
  /// into a small buffer + gemm above. F32; x, y and the terms on the weight's device (on the
  /// GPU, T <= 8 is one kernel, terms included).
  void matmul(const Tensor& x, const Tensor& y, bool accumulate = false,
              std::span<const LowRankTerm> terms = {}) const;

  /// The tensors as the seam's packed ops take them.
  ops::Packed view() const;

 private:
  void validate(std::string_view where) const;

  Tensor codes_, scales_, offsets_, codebook_;
  int64_t rows_ = 0, cols_ = 0, group_ = 0;
  int bits_ = 0;
  QuantFormat format_ = QuantFormat::Affine;
};

}  // namespace lrq
