// The packed formats' facts in one table: what each stores, how it is spelled in checkpoints,
// what it costs per weight, and the chunk layout every format shares (formats/packed_weight.h
// describes the bits). Names, validation and storage accounting read from here instead of
// restating the facts, and the static_asserts below pin the layout the kernels (backend/cpu,
// backend/cuda) are written for, so changing a fact here without them fails to compile.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "backend/ops.h"

namespace lrq {

/// The formats layer's name for the seam's packed format (the same enum: no conversion).
using QuantFormat = ops::PackedFormat;

struct FormatTraits {
  QuantFormat format;
  std::string_view name;  // the spelling stored in checkpoint metadata
  bool has_offsets;       // F16 [rows, cols/group] beside the scales
  bool has_codebook;      // F32 [2^bits] per layer

  /// Bits per weight of what grows with the matrix: the code, one F16 scale per group and, with
  /// offsets, one F16 offset per group. The codebook (2^bits F32 values per layer) is not per
  /// weight; storage_bytes counts it.
  constexpr double bits_per_weight(int bits, int64_t group) const {
    return double(bits) + 16.0 / double(group) * (has_offsets ? 2 : 1);
  }
};

inline constexpr std::array<FormatTraits, 3> kFormatTraits = {{
    {QuantFormat::Affine, "affine", true, false},
    {QuantFormat::Symmetric, "symmetric", false, false},
    {QuantFormat::Codebook, "codebook", false, true},
}};

constexpr const FormatTraits& format_traits(QuantFormat f) { return kFormatTraits[size_t(f)]; }

/// "affine", "symmetric", "codebook" (the spelling stored in checkpoint metadata).
constexpr std::string_view quant_format_name(QuantFormat f) { return format_traits(f).name; }
/// Parses a quant_format_name(); false if unknown.
constexpr bool quant_format_from_name(std::string_view name, QuantFormat* out) {
  for (const FormatTraits& t : kFormatTraits)
    if (t.name == name) {
      *out = t.format;
      return true;
    }
  return false;
}

// ------------------------------------------------------------------ chunk layout
/// Values per chunk: a row is cols/32 chunks, and group boundaries are chunk boundaries.
inline constexpr int64_t kChunkValues = 32;
/// The code widths with a layout (and kernels).
inline constexpr std::array<int, 4> kPackedBits = {2, 3, 4, 8};

constexpr bool packed_bits_valid(int bits) {
  for (int b : kPackedBits)
    if (b == bits) return true;
  return false;
}
/// Bytes of one chunk: 32 values of `bits` bits, no padding.
constexpr int64_t chunk_bytes(int bits) { return 4 * int64_t(bits); }
/// Bytes of one packed row of `cols` values at `bits` (cols a multiple of 32).
constexpr int64_t packed_row_bytes(int64_t cols, int bits) {
  return cols / kChunkValues * chunk_bytes(bits);
}
/// Exact bytes of all stored tensors of a rows x cols matrix in format f.
constexpr size_t format_storage_bytes(QuantFormat f, int64_t rows, int64_t cols, int bits,
                                      int64_t group) {
  const FormatTraits& t = format_traits(f);
  const int64_t per_group = rows * (cols / group) * 2;  // F16
  return size_t(rows * packed_row_bytes(cols, bits) + per_group +
                (t.has_offsets ? per_group : 0) + (t.has_codebook ? (int64_t(4) << bits) : 0));
}

static_assert([] {
  for (size_t i = 0; i < kFormatTraits.size(); ++i)
    if (size_t(kFormatTraits[i].format) != i) return false;
  return true;
}(), "kFormatTraits is indexed by QuantFormat");
static_assert(kChunkValues == ops::kPackedChunk, "the backend's chunk is the format's chunk");
static_assert([] {
  for (int b : kPackedBits)
    if (chunk_bytes(b) * 8 != kChunkValues * b) return false;  // whole bytes, no padding
  return true;
}(), "a chunk is 32 values in 4*bits bytes");
static_assert(chunk_bytes(2) == 8 && chunk_bytes(3) == 12 && chunk_bytes(4) == 16 &&
                  chunk_bytes(8) == 32,
              "chunk sizes the AVX2 and CUDA decoders load");
// The per-weight formula and the exact storage agree (one 4096 x 4096 layer, group 128).
static_assert(format_storage_bytes(QuantFormat::Affine, 4096, 4096, 4, 128) * 8 ==
              size_t(format_traits(QuantFormat::Affine).bits_per_weight(4, 128) * 4096 * 4096));
static_assert(format_storage_bytes(QuantFormat::Codebook, 4096, 4096, 4, 64) * 8 ==
              size_t(format_traits(QuantFormat::Codebook).bits_per_weight(4, 64) * 4096 * 4096) +
                  (size_t(4) << 4) * 8);  // the codebook: 16 F32 values

}  // namespace lrq
