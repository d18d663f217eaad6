// GPTQ on one matrix (algorithm and column-order conventions in gptq_solver.h).
//
// The working copy is W^T (column-major W): column i of W is a contiguous row of rows values,
// so quantizing a column, propagating its error and the lazy GEMM update all run over
// contiguous memory, and rows are split into independent chunks across threads (GPTQ never
// couples two output rows).
#include "quant/kernels/gptq_solver.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>
#include <numeric>

#include "backend/ops.h"
#if defined(LRQ_WITH_CUDA)
#include "quant/cuda/quant_cuda.h"
#endif

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

void check_hessian(const Tensor& H, std::string_view where) {
  const bool gpu = H.defined() && H.device() == Device::CUDA;
  if (!H.defined() || H.ndim() != 2 || H.dim(0) != H.dim(1) ||
      !(H.dtype() == DType::F64 || (gpu && H.dtype() == DType::F32)))
    fail(where, "H must be a square F64 matrix (F32 also on the GPU), got {}",
         H.defined() ? H.str() : "none");
  const int64_t n = H.dim(0);
  if (gpu) {
    if (!std::isfinite(ops::norm_stats(H).sumsq)) fail(where, "H has a non-finite element");
    return;
  }
  const double* h = H.data<double>();
  for (int64_t i = 0; i < n * n; ++i)
    if (!std::isfinite(h[i])) fail(where, "H element ({}, {}) is {}", i / n, i % n, h[i]);
}

// U (F32 [n, n], upper) with (H' + add I)^-1 = U^T U, where H' is H permuted with the diagonal
// `diag`. False if that matrix is not positive definite.
bool inverse_cholesky_upper_cpu(const Tensor& H, const std::vector<int32_t>& perm,
                                const std::vector<double>& diag, double add, Tensor* U) {
  const int64_t n = H.dim(0);
  const double* h = H.data<double>();
  Tensor A = Tensor::empty({n, n}, DType::F64);
  double* a = A.data<double>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double* hi = h + int64_t(perm[size_t(i)]) * n;
    for (int64_t j = 0; j < n; ++j) a[i * n + j] = hi[perm[size_t(j)]];
    a[i * n + i] = diag[size_t(perm[size_t(i)])] + add;
  }
  if (!(ops::spd_inverse(A) && ops::cholesky(A))) return false;
  // A now holds L (lower) with H'^-1 = L L^T, so U = L^T.
  *U = Tensor::empty({n, n});
  transpose(a, n, n, U->data<float>());  // L's strict upper triangle is zero, so U's strict lower is too
  return true;
}

}  // namespace

std::vector<double> hessian_diagonal(const Tensor& H) {
  const int64_t n = H.dim(0);
#if defined(LRQ_WITH_CUDA)
  if (H.device() == Device::CUDA) return quant_cuda::diagonal(H);
#endif
  if (!H.is_cpu() || H.dtype() != DType::F64)
    fail("gptq", "H must be a CPU F64 matrix here, got {}", H.str());
  std::vector<double> d(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) d[size_t(i)] = H.data<double>()[i * n + i];
  return d;
}

std::string gptq_factor_key(const GptqOptions& opt, Device device) {
  return fmt::format("gptq_factor/{}/act{}/damp{:.17g}", device_name(device),
                     opt.act_order ? 1 : 0, opt.damp);
}

GptqFactor gptq_factor(const Tensor& H, const GptqOptions& opt) {
  const char* where = "gptq";
  check_hessian(H, where);
  if (!(opt.damp >= 0 && std::isfinite(opt.damp)))
    fail(where, "damp must be a finite non-negative number, got {}", opt.damp);
  const int64_t n = H.dim(0);
  const bool gpu = H.device() == Device::CUDA;
#if !defined(LRQ_WITH_CUDA)
  if (gpu) fail(where, "H is on the GPU but this build has no CUDA backend");
#endif

  // Dead inputs and the column order.
  GptqFactor f;
  f.diag = hessian_diagonal(H);
  f.dead.assign(size_t(n), 0);
  for (int64_t i = 0; i < n; ++i)
    if (f.diag[size_t(i)] == 0) f.dead[size_t(i)] = 1, f.diag[size_t(i)] = 1;
  f.perm.resize(size_t(n));
  std::iota(f.perm.begin(), f.perm.end(), 0);
  if (opt.act_order)
    std::stable_sort(f.perm.begin(), f.perm.end(),
                     [&](int32_t a, int32_t b) { return f.diag[size_t(a)] > f.diag[size_t(b)]; });

  // Raise the damping until H' + damp * mean(diag H') I is positive definite.
  const double mean_diag = std::accumulate(f.diag.begin(), f.diag.end(), 0.0) / double(n);
  double damp = opt.damp;
  for (int attempt = 0;; ++attempt) {
    bool ok = false;
#if defined(LRQ_WITH_CUDA)
    if (gpu) ok = quant_cuda::inverse_cholesky_upper(H, f.perm, f.diag, damp * mean_diag, &f.U);
#endif
    if (!gpu) ok = inverse_cholesky_upper_cpu(H, f.perm, f.diag, damp * mean_diag, &f.U);
    if (ok) break;
    if (attempt == kDampRetries)
      fail(where, "H is not positive definite even with damping {} x mean(diag H)", damp);
    damp = damp > 0 ? damp * 10 : 0.01;
  }
  if (damp != opt.damp)
    f.warning = fmt::format("gptq: H + {} x mean(diag H) is not positive definite; used damping {}",
                            opt.damp, damp);
  return f;
}

namespace {
// The checks both entry points make, and the factor (computed here when none is given).
const GptqFactor& checked_factor(const Tensor& W, const Tensor& H, const GptqOptions& opt,
                                 const GptqFactor* factor, GptqFactor* local) {
  const char* where = "gptq";
  check_quantizable(W, where);
  const int64_t n = W.dim(1);
  if (opt.block <= 0) fail(where, "block must be positive, got {}", opt.block);
  if (!H.defined() || H.device() != W.device())
    fail(where, "H ({}) must be on the device of the weight ({})", H.defined() ? H.str() : "none",
         W.str());
  if (H.ndim() != 2 || H.dim(0) != n || H.dim(1) != n)
    fail(where, "H must be [{}, {}] for a weight of {} columns, got {}", n, n, n, H.str());
  if (!factor) {
    *local = gptq_factor(H, opt);
    return *local;
  }
  if (factor->U.shape() != Shape{n, n} || factor->U.device() != W.device() ||
      factor->perm.size() != size_t(n))
    fail(where, "cached factor {} does not fit a weight {}", factor->U.str(), W.str());
  return *factor;
}

Tensor assign_codes(const Tensor& W, const Tensor& H, const GptqOptions& opt,
                    const GptqFactor* factor, const GptqGrids& grids, GptqResult* res,
                    std::vector<float>* S_out, std::vector<float>* O_out);
}  // namespace

GptqResult gptq_quantize(const Tensor& W, const Tensor& H, const GptqOptions& opt,
                         const GptqFactor* factor) {
  const char* where = "gptq";
  check_quantizable(W, where);
  const int64_t rows = W.dim(0), n = W.dim(1);
  const RtnOptions& grid = opt.grid;
  const int64_t g = resolve_grid_options(grid, n, where), ng = n / g;
#if defined(LRQ_WITH_CUDA)
  if (W.device() == Device::CUDA) {
    GptqFactor local;
    return quant_cuda::gptq(W, checked_factor(W, H, opt, factor, &local), opt, g);
  }
#endif
  GptqGrids grids;
  grids.group = grids.span = g;
  grids.maxq = (1 << grid.bits) - 1;
  grids.fit = [&](const float* w, int64_t ld, int64_t count, int64_t, int64_t, const float* imp,
                  float* S, float* O) { fit_grids(w, g, ld, count, 1, imp, grid, S, O); };
  GptqResult res;
  std::vector<float> S, O;
  const Tensor codes = assign_codes(W, H, opt, factor, grids, &res, &S, &O);
  Tensor scales = Tensor::empty({rows, ng}, DType::F16);
  Tensor offsets = grid.symmetric ? Tensor() : Tensor::empty({rows, ng}, DType::F16);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t gi = 0; gi < ng; ++gi) {
      scales.data<uint16_t>()[r * ng + gi] = f32_to_f16(S[size_t(gi * rows + r)]);
      if (!grid.symmetric) offsets.data<uint16_t>()[r * ng + gi] = f32_to_f16(O[size_t(gi * rows + r)]);
    }
  res.q = PackedWeight::pack(codes, scales, offsets, Tensor(), grid.bits, g,
                             grid.symmetric ? QuantFormat::Symmetric : QuantFormat::Affine);
  return res;
}

Tensor gptq_assign(const Tensor& W, const Tensor& H, const GptqOptions& opt,
                   const GptqFactor* factor, const GptqGrids& grids, GptqResult* res) {
  std::vector<float> S, O;
  return assign_codes(W, H, opt, factor, grids, res, &S, &O);
}

namespace {
Tensor assign_codes(const Tensor& W, const Tensor& H, const GptqOptions& opt,
                    const GptqFactor* factor, const GptqGrids& grids, GptqResult* res,
                    std::vector<float>* S_out, std::vector<float>* O_out) {
  GptqFactor local;
  const GptqFactor& f = checked_factor(W, H, opt, factor, &local);
  if (!W.is_cpu()) fail("gptq", "this grid is quantized on the CPU only, got {}", W.str());
  const int64_t rows = W.dim(0), n = W.dim(1);
  const int64_t g = grids.group, span = grids.span, ng = n / g;
  LRQ_ASSERT(g > 0 && span % g == 0 && n % span == 0);
  const float maxq = float(grids.maxq);
  const std::vector<int32_t>& perm = f.perm;
  const std::vector<double>& diag = f.diag;
  const std::vector<char>& dead = f.dead;
  res->warning = f.warning;
  const float* u = f.U.data<float>();

  // Working weights Wt [n, rows] in input order, dead columns zeroed.
  Tensor Wt = Tensor::empty({n, rows});
  transpose(W.data<float>(), rows, n, Wt.data<float>());
  for (int64_t i = 0; i < n; ++i)
    if (dead[size_t(i)]) std::fill_n(Wt.data<float>() + i * rows, rows, 0.f);

  // Grids [ng, rows]: static ones now (original columns), dynamic ones at each span start.
  std::vector<float>& S = *S_out;
  std::vector<float>& O = *O_out;
  S.assign(size_t(ng * rows), 0.f);
  O.assign(size_t(ng * rows), 0.f);
  std::vector<float> imp(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) imp[size_t(i)] = float(diag[size_t(i)]);
  if (opt.static_groups) {
    const float* wt = Wt.data<float>();
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int64_t c0 = 0; c0 < n; c0 += span)
      for (int64_t r0 = 0; r0 < rows; r0 += kRowsPerTask)
        grids.fit(wt + c0 * rows + r0, rows, std::min(kRowsPerTask, rows - r0), c0, r0,
                  imp.data() + c0, &S[size_t(c0 / g * rows + r0)], &O[size_t(c0 / g * rows + r0)]);
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
  // Per-task losses summed in task order at the end (an OpenMP reduction would add them in the
  // order the threads finish: not reproducible with more than two threads).
  std::vector<double> task_loss(static_cast<size_t>(tasks), 0.0);
  for (int64_t b0 = 0; b0 < n; b0 += B) {
    const int64_t b1 = std::min(n, b0 + B);
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      double& loss = task_loss[size_t(task)];
      const int64_t r0 = task * kRowsPerTask, r1 = std::min(rows, r0 + kRowsPerTask);
      for (int64_t i = b0; i < b1; ++i) {
        float* wi = wt + i * rows;
        if (!opt.static_groups && i % span == 0)
          grids.fit(wi + r0, rows, r1 - r0, i, r0, imp.data() + i, &S[size_t(i / g * rows)] + r0,
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
  res->loss = 0;
  for (const double l : task_loss) res->loss += l;

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
  res->perm.clear();
  if (opt.act_order && !opt.static_groups) res->perm = perm;
  return codes;
}
}  // namespace

}  // namespace lrq
