// GPTQ (Frantar et al. 2022) on one weight matrix: quantize W column by column in the order of
// the upper Cholesky factor U of H^-1 (H^-1 = U^T U), pushing each column's rounding error onto
// the columns not yet quantized, with lazy block updates.
//
// Steps: dead inputs (H_ii == 0) get H_ii = 1 and W[:, i] = 0; optional act-order permutes
// columns by descending diag(H) (stable); H += damp * mean(diag H) * I, U from H^-1 in F64 (if
// H is still not positive definite the damping is raised tenfold, up to 5 times, and
// GptqResult::warning says so). Then, per lazy block of `block` columns: for each column i,
// code = nearest on its group's grid, err = (w - q) / U_ii, W[:, j] -= err * U_ij for the
// block's later columns j; after the block one GEMM applies the block's errors to all later
// columns. A group's scale/offset is fitted (with clip search if enabled, weighted by diag H)
// when its first column is reached, from the weights as updated so far: all lazy updates of
// earlier blocks plus this block's in-block propagation (the reference uses the weights before
// this block's in-block propagation; the two coincide when groups start at block boundaries).
//
// Column order of the result:
//   no act-order:                   the input order; perm empty.
//   act-order, dynamic groups:      the permuted order, groups contiguous in it; perm[j] is the
//                                   input column stored at j (y = Q x[perm]). This equals the
//                                   reference's g_idx = i / group only up to that permutation,
//                                   which we store instead of g_idx.
//   act-order with static_groups:   grids come from the original W before the loop, one per
//                                   group of original columns, so after quantizing in act order
//                                   the codes are put back in the input order; perm empty.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/packed_weight.h"
#include "quant/kernels/rtn_grid.h"

namespace lrq {

struct GptqOptions {
  RtnOptions grid;             ///< bits, group, symmetric, clip search
  bool act_order = false;
  bool static_groups = false;
  double damp = 0.01;          ///< added to diag(H), as a fraction of mean(diag H)
  int64_t block = 128;         ///< lazy-batch width in columns (the GPU caps it at 128)
};

struct GptqResult {
  PackedWeight q;              ///< Affine or Symmetric format
  std::vector<int32_t> perm;   ///< stored column j holds input column perm[j]; empty = identity
  double loss = 0;             ///< sum of (w - q)^2 / (2 U_jj^2), the reference's reported error
  std::string warning;         ///< non-empty when the damping had to be raised
};

/// What GPTQ derives from H alone (dead inputs, column order, the damped inverse's factor):
/// the same for every weight matrix that reads this H under the same act_order and damp, so
/// the method caches it per calibration site (SiteStats::memo; q/k/v and gate/up share one H).
struct GptqFactor {
  Tensor U;                    ///< F32 [n, n] upper, (H' + damp I)^-1 = U^T U; on H's device
  std::vector<int32_t> perm;   ///< processing order: column i of U is input column perm[i]
  std::vector<char> dead;      ///< H_ii == 0, input order
  std::vector<double> diag;    ///< diag(H), dead entries 1, input order
  std::string warning;         ///< non-empty when the damping had to be raised
};

/// diag(H) of a CPU F64 or CUDA F32/F64 square matrix, on the host.
std::vector<double> hessian_diagonal(const Tensor& H);

/// The factor of H (F64 [n, n] on the CPU; F64 or F32 on the GPU, where U stays on the GPU).
/// Throws Error if H is not finite or not positive definite even after raising the damping.
GptqFactor gptq_factor(const Tensor& H, const GptqOptions& opt);
/// The SiteStats::memo key of gptq_factor(H, opt) for H on `device`.
std::string gptq_factor_key(const GptqOptions& opt, Device device);

/// The grids GPTQ's CPU loop assigns codes on: one (scale S, offset O) per (group of `group`
/// columns, row), codes 0..maxq with value c * S + O. fit() sets the grids of the `span` columns
/// (a multiple of group) starting at processing column c0 for `count` rows: w[k * ld + r] is
/// column c0 + k of row r0 + r as updated so far, imp[k] its importance; it writes S[j * ld + r]
/// and O[j * ld + r] for group j < span / group. The uniform grids have span = group; the
/// K-quants fit a super-block's sub-block grids together.
struct GptqGrids {
  int64_t group = 0, span = 0;
  int maxq = 0;
  std::function<void(const float* w, int64_t ld, int64_t count, int64_t c0, int64_t r0,
                     const float* imp, float* S, float* O)>
      fit;
};
/// gptq_quantize's CPU loop on any grids: the codes U8 [rows, n] in the stored column order,
/// with perm, loss and warning in *res (res->q untouched). Checks W and H as gptq_quantize does.
Tensor gptq_assign(const Tensor& W, const Tensor& H, const GptqOptions& opt,
                   const GptqFactor* factor, const GptqGrids& grids, GptqResult* res);

/// Quantizes W (F32 [rows, cols]) given H (F64 [cols, cols], = X X^T / T), both on the CPU or
/// both on the GPU (H in F64 or F32 there); the packed result is on W's device.
/// factor: gptq_factor(H, opt) made earlier (on W's device), or null to compute it here.
GptqResult gptq_quantize(const Tensor& W, const Tensor& H, const GptqOptions& opt,
                         const GptqFactor* factor = nullptr);

}  // namespace lrq
