// GPTQ on one matrix (algorithm and column-order conventions in gptq.h).
//
// The working copy is W^T (column-major W): column i of W is a contiguous row of rows values,
// so quantizing a column, propagating its error and the lazy GEMM update all run over
// contiguous memory, and rows are split into independent chunks across threads (GPTQ never
// couples two output rows).
#include "quant/gptq.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/ops.h"

namespace lrq {
namespace {

constexpr int64_t kRowsPerTask = 64;  // a task's block slab (128 x 64 floats) stays in L1/L2
constexpr int kDampRetries = 5;

// dst[c, r] = src[r, c] for src [rows, cols] (tiled so both sides stream through cache).
template <class S, class D>
void transpose(const S* src, int64_t rows, int64_t cols, D* dst) {
  constexpr int64_t tile = 32;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t r0 = 0; r0 < rows; r0 += tile)
    for (int64_t c0 = 0; c0 < cols; c0 += tile)
      for (int64_t r = r0; r < std::min(rows, r0 + tile); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + tile); ++c) dst[c * rows + r] = D(src[r * cols + c]);
}

void check_hessian(const Tensor& H, int64_t n, std::string_view where) {
  if (!H.defined() || !H.is_cpu() || H.dtype() != DType::F64 || H.shape() != Shape{n, n})
    fail(where, "H must be a CPU F64 [{}, {}] matrix, got {}", n, n, H.defined() ? H.str() : "none");
  const double* h = H.data<double>();
  for (int64_t i = 0; i < n * n; ++i)
    if (!std::isfinite(h[i])) fail(where, "H element ({}, {}) is {}", i / n, i % n, h[i]);
}

// U (F32 [n, n], upper) with (H' + damp * mean(diag H') I)^-1 = U^T U, where H' is H permuted
// with dead diagonals set to 1. Raises damp until H' + damp I is positive definite.
Tensor inverse_cholesky_upper(const Tensor& H, const std::vector<int32_t>& perm,
                              const std::vector<double>& diag, double damp0, std::string* warning,
                              std::string_view where) {
  const int64_t n = H.dim(0);
  const double* h = H.data<double>();
  const double mean_diag = std::accumulate(diag.begin(), diag.end(), 0.0) / double(n);
  Tensor A = Tensor::empty({n, n}, DType::F64);
  double* a = A.data<double>();
  double damp = damp0;
  for (int attempt = 0;; ++attempt) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const double* hi = h + int64_t(perm[size_t(i)]) * n;
      for (int64_t j = 0; j < n; ++j) a[i * n + j] = hi[perm[size_t(j)]];
      a[i * n + i] = diag[size_t(perm[size_t(i)])] + damp * mean_diag;
    }
    if (ops::spd_inverse(A) && ops::cholesky(A)) break;
    if (attempt == kDampRetries)
      fail(where, "H is not positive definite even with damping {} x mean(diag H)", damp);
    damp = damp > 0 ? damp * 10 : 0.01;
  }
  if (damp != damp0)
    *warning = fmt::format("gptq: H + {} x mean(diag H) is not positive definite; used damping {}",
                           damp0, damp);
  // A now holds L (lower) with H'^-1 = L L^T, so U = L^T.
  Tensor U = Tensor::empty({n, n});
  float* u = U.data<float>();
  transpose(a, n, n, u);  // L's strict upper triangle is zero, so U's strict lower is too
  return U;
}

}  // namespace

GptqResult gptq_quantize(const Tensor& W, const Tensor& H, const GptqOptions& opt) {
  const char* where = "gptq";
  check_quantizable(W, where);
  const int64_t rows = W.dim(0), n = W.dim(1);
  const RtnOptions& grid = opt.grid;
  const int64_t g = resolve_grid_options(grid, n, where), ng = n / g;
  check_hessian(H, n, where);
  if (!(opt.damp >= 0 && std::isfinite(opt.damp)))
    fail(where, "damp must be a finite non-negative number, got {}", opt.damp);
  if (opt.block <= 0) fail(where, "block must be positive, got {}", opt.block);
  const float maxq = float((1 << grid.bits) - 1);

  // Dead inputs and the column order.
  std::vector<double> diag(static_cast<size_t>(n));
  std::vector<char> dead(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    diag[size_t(i)] = H.data<double>()[i * n + i];
    if (diag[size_t(i)] == 0) dead[size_t(i)] = 1, diag[size_t(i)] = 1;
  }
  std::vector<int32_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (opt.act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int32_t a, int32_t b) { return diag[size_t(a)] > diag[size_t(b)]; });

  GptqResult res;
  const Tensor U = inverse_cholesky_upper(H, perm, diag, opt.damp, &res.warning, where);
  const float* u = U.data<float>();

  // Working weights Wt [n, rows] in input order, dead columns zeroed.
  Tensor Wt = Tensor::empty({n, rows});
  transpose(W.data<float>(), rows, n, Wt.data<float>());
  for (int64_t i = 0; i < n; ++i)
    if (dead[size_t(i)]) std::fill_n(Wt.data<float>() + i * rows, rows, 0.f);

  // Grids [ng, rows]: static ones now (original columns), dynamic ones at each group start.
  std::vector<float> S(size_t(ng * rows)), O(size_t(ng * rows));
  std::vector<float> imp(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) imp[size_t(i)] = float(diag[size_t(i)]);
  if (opt.static_groups) {
    const float* wt = Wt.data<float>();
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int64_t gi = 0; gi < ng; ++gi)
      for (int64_t r0 = 0; r0 < rows; r0 += kRowsPerTask)
        fit_grids(wt + gi * g * rows + r0, g, rows, std::min(kRowsPerTask, rows - r0), 1,
                  imp.data() + gi * g, grid, &S[size_t(gi * rows + r0)], &O[size_t(gi * rows + r0)]);
  }
  if (opt.act_order) {
    Tensor P = Tensor::empty({n, rows});
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(Wt.data<float>() + int64_t(perm[size_t(i)]) * rows, rows, P.data<float>() + i * rows);
    Wt = P;
    for (int64_t i = 0; i < n; ++i) imp[size_t(i)] = float(diag[size_t(perm[size_t(i)])]);
  }

  float* wt = Wt.data<float>();
  std::vector<uint8_t> codes_t(size_t(n * rows));  // [n, rows] in processing order
  const int64_t B = std::min(opt.block, n);
  Tensor E = Tensor::empty({B, rows});  // scaled errors (w - q) / U_ii of the current block
  float* e = E.data<float>();
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  double loss = 0;
  for (int64_t b0 = 0; b0 < n; b0 += B) {
    const int64_t b1 = std::min(n, b0 + B);
#pragma omp parallel for schedule(static) reduction(+ : loss)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t r0 = task * kRowsPerTask, r1 = std::min(rows, r0 + kRowsPerTask);
      for (int64_t i = b0; i < b1; ++i) {
        float* wi = wt + i * rows;
        if (!opt.static_groups && i % g == 0)
          fit_grids(wi + r0, g, rows, r1 - r0, 1, imp.data() + i, grid, &S[size_t(i / g * rows)] + r0,
                    &O[size_t(i / g * rows)] + r0);
        const int64_t gi = opt.static_groups ? perm[size_t(i)] / g : i / g;
        const float* s = &S[size_t(gi * rows)];
        const float* o = &O[size_t(gi * rows)];
        const float d = u[i * n + i];
        float* ei = e + (i - b0) * rows;
        uint8_t* ci = codes_t.data() + i * rows;
        float l = 0;
#pragma omp simd reduction(+ : l)
        for (int64_t r = r0; r < r1; ++r) {
          const float q = quantize_code(wi[r], s[r], o[r], maxq);
          const float diff = wi[r] - dequantize_code(q, s[r], o[r]);
          ci[r] = uint8_t(q);
          ei[r] = diff / d;
          l += diff * diff;
        }
        loss += double(l) / (2.0 * double(d) * double(d));
        for (int64_t j = i + 1; j < b1; ++j) {
          const float uij = u[i * n + j];
          float* wj = wt + j * rows;
          for (int64_t r = r0; r < r1; ++r) wj[r] -= ei[r] * uij;
        }
      }
    }
    if (b1 < n) {  // lazy update: W[:, b1:] -= E^T U[b0:b1, b1:], i.e. Wt[b1:] -= U_blk^T E
      Tensor Ublk = Tensor::empty({b1 - b0, n - b1});
      for (int64_t i = b0; i < b1; ++i)
        std::copy_n(u + i * n + b1, n - b1, Ublk.data<float>() + (i - b0) * (n - b1));
      ops::gemm(Ublk, true, E.rows(0, b1 - b0), false, Wt.rows(b1, n), -1.0, 1.0);
    }
  }
  res.loss = loss;

  // Back to row-major [rows, n] in the stored column order.
  const bool unpermute = opt.act_order && opt.static_groups;
  if (unpermute) {
    std::vector<uint8_t> orig(size_t(n * rows));
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(codes_t.data() + i * rows, rows, orig.data() + int64_t(perm[size_t(i)]) * rows);
    codes_t.swap(orig);
  }
  Tensor codes = Tensor::empty({rows, n}, DType::U8);
  transpose(codes_t.data(), n, rows, codes.data<uint8_t>());
  Tensor scales = Tensor::empty({rows, ng}, DType::F16);
  Tensor offsets = grid.symmetric ? Tensor() : Tensor::empty({rows, ng}, DType::F16);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t gi = 0; gi < ng; ++gi) {
      scales.data<uint16_t>()[r * ng + gi] = f32_to_f16(S[size_t(gi * rows + r)]);
      if (!grid.symmetric) offsets.data<uint16_t>()[r * ng + gi] = f32_to_f16(O[size_t(gi * rows + r)]);
    }
  res.q = PackedWeight::pack(codes, scales, offsets, Tensor(), grid.bits, g,
                             grid.symmetric ? QuantFormat::Symmetric : QuantFormat::Affine);
  if (opt.act_order && !opt.static_groups) res.perm = perm;
  return res;
}

}  // namespace lrq
