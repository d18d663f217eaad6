// NormalFloat (QLoRA) quantization: a codebook at quantiles of N(0, 1) scaled to [-1, 1], one
// absmax scale per block of input columns, nearest-codeword rounding.
//
// Codebook for b bits (N = 2^b): p = 1 - (1/(2(N-1)) + 1/(2N)) / 2 is the outermost
// probability (midway between the N-1 and N equal-mass tail cut-offs); the N/2 positive values
// are Phi^-1 at N/2 equally spaced probabilities from p down to (but excluding) 1/2, the N/2-1
// negative values are -Phi^-1 at N/2-1 equally spaced probabilities from p down to (excluding)
// 1/2, plus an exact 0; all divided by Phi^-1(p) so the ends are exactly -1 and 1. For b = 4 this
// reproduces the published NF4 table to 1e-4 (tests/quant_kernels_test.cpp); for b = 3 it gives
// 3 negative, 0, 4 positive levels.
#pragma once
#include <cstdint>

#include "core/tensor.h"
#include "formats/packed_weight.h"

namespace lrq {

struct NfOptions {
  int bits = 4;         ///< 2, 3, 4 or 8
  int64_t block = 64;   ///< input columns per absmax scale (multiple of 32; 0 = per row)
};

/// The NormalFloat codebook: F32 [2^bits], ascending, from -1 to 1 with an exact 0.
Tensor nf_codebook(int bits);

/// Quantizes W (F32 [rows, cols]): scale = fp16(absmax of the block), code = the codeword
/// nearest to w / scale. Result in the Codebook format.
PackedWeight nf_quantize(const Tensor& W, const NfOptions& opt);

}  // namespace lrq
