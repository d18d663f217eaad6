// Quantization onto ggml's K-quant grids (Q2_K..Q6_K; layouts in io/gguf.h, KQuantLayout), so a
// layer exports to GGUF bit for bit and llama.cpp computes with the values lrquant measured.
//
// A super-block of 256 consecutive input columns of one row has 8 or 16 sub-blocks; sub-block j
// decodes code c as A_j (c - code_zero) - M_j with A_j = d * scale_j and M_j = dmin * min_j, d and
// dmin F16, scale_j and min_j small integers. The grids are chosen first, per super-block:
//   1. per sub-block, real (A_j, M_j) minimizing the importance-weighted squared error
//      sum_k imp_k (x_k - q(x_k))^2: candidate ranges (the min/max range stretched or shrunk in
//      steps of 0.1 code, the largest magnitude mapped to either end for the symmetric types),
//      each followed by a weighted least-squares refit of (A, M) on its codes and a reassignment;
//   2. d (and dmin) from the largest A_j (M_j) over the scale range, tried at a few factors
//      around it, rounded to F16; integer scales and mins the nearest multiples, the factor with
//      the least super-block error kept;
//   3. each sub-block's integer scale and min moved by -1, 0 or +1 where that lowers its error.
// Every error is computed on the exact decoded values (this file is compiled with
// -ffp-contract=off, like the decoders). Then codes are assigned on those fixed grids: nearest
// (RTN) or by GPTQ with its error feedback (kquant_gptq), which fits each super-block's grids
// when its first column is reached, from the weights as updated so far, with diag(H) as the
// importance.
#pragma once
#include <string>

#include "core/tensor.h"
#include "io/gguf.h"
#include "quant/kernels/gptq_solver.h"

namespace lrq {

/// Fits the grids of one super-block: values x[k * stride], k < 256, importance imp[k] (null: 1).
/// Sets b's d, dmin, scale and min (b's codes untouched), and for each sub-block j the grid as
/// GPTQ's loop uses it: code c (0..maxq) has value about c * S[j * ld] + O[j * ld].
void fit_kquant_superblock(const gguf::KQuantLayout& l, const float* x, int64_t stride,
                           const float* imp, gguf::KQuantBlock* b, float* S, float* O,
                           int64_t ld = 1);

/// The values b's codes decode to, computed from its numbers as ggml's decoder computes them.
void kquant_values(const gguf::KQuantLayout& l, const gguf::KQuantBlock& b, float* out);

/// Round to nearest onto fitted K-quant grids. W: F32 [rows, cols] on the CPU, cols a multiple of
/// 256; importance F32/F64 [cols] or undefined (uniform). Returns the ggml block bytes, U8
/// [rows, row_bytes(type, cols)].
Tensor kquant_rtn(const Tensor& W, gguf::Type type, const Tensor& importance = Tensor());

/// GPTQ onto K-quant grids (opt.grid is ignored; act_order, static_groups, damp and block as for
/// gptq_quantize). CPU. Returns the block bytes in the stored column order with the permutation,
/// loss and warning in *res (res->q stays empty).
Tensor kquant_gptq(const Tensor& W, const Tensor& H, gguf::Type type, const GptqOptions& opt,
                   const GptqFactor* factor, GptqResult* res);

}  // namespace lrq
