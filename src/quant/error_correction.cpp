#include "quant/error_correction.h"

#include <algorithm>
#include <cmath>

#include "backend/ops.h"
#include "core/error.h"

namespace lrq {

ErrorWeighting parse_error_weighting(const std::string& s) {
  if (s == "none") return ErrorWeighting::None;
  if (s == "diag") return ErrorWeighting::Diag;
  if (s == "full") return ErrorWeighting::Full;
  fail("recipe", "unknown error weighting '{}' (valid: none, diag, full)", s);
}

namespace {
// Symmetric square root and inverse square root of H, through its eigendecomposition;
// eigenvalues are floored at a small fraction of the largest so dead channels do not blow up
// the inverse (their columns carry no output error anyway).
void sqrt_and_inv_sqrt(const Tensor& H, Tensor& S, Tensor& Si) {
  const int64_t n = H.dim(0);
  Tensor A = H.clone(), w = Tensor::empty({n}, DType::F64), V = Tensor::empty({n, n}, DType::F64);
  ops::eigh(A, w, V);
  const double* ev = w.data<double>();
  const double floor = std::max(ev[n - 1], 1e-30) * 1e-8;
  Tensor Vs = Tensor::empty({n, n}, DType::F64), Vi = Tensor::empty({n, n}, DType::F64);
  const double* v = V.data<double>();
  double* a = Vs.data<double>();
  double* b = Vi.data<double>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double e = std::max(ev[j], floor);
      a[i * n + j] = v[i * n + j] * std::sqrt(std::sqrt(e));
      b[i * n + j] = v[i * n + j] / std::sqrt(std::sqrt(e));
    }
  S = Tensor::empty({n, n}, DType::F64);
  Si = Tensor::empty({n, n}, DType::F64);
  ops::gemm(Vs, false, Vs, true, S);   // V e^1/2 V^T
  ops::gemm(Vi, false, Vi, true, Si);  // V e^-1/2 V^T
}
}  // namespace

Factors fit_error_low_rank(const Tensor& E, int64_t rank, ErrorWeighting wt, const Tensor& H,
                           const Tensor& mean_abs) {
  const int64_t m = E.dim(0), n = E.dim(1);
  rank = std::min({rank, m, n});
  LRQ_ASSERT(rank > 0);
  // Weighted problem in F64: A = E M, then L R = U_r S_r (V_r^T M^-1).
  Tensor A = E.to(DType::F64).clone();
  Tensor M, Mi;
  if (wt == ErrorWeighting::Diag) {
    const double* s = mean_abs.data<double>();
    double* a = A.data<double>();
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) a[i * n + j] *= std::max(s[j], 1e-12);
  } else if (wt == ErrorWeighting::Full) {
    sqrt_and_inv_sqrt(H, M, Mi);
    Tensor AM = Tensor::empty({m, n}, DType::F64);
    ops::gemm(A, false, M, false, AM);
    A = AM;
  }
  const int64_t k = std::min(m, n);
  Tensor U = Tensor::empty({m, k}, DType::F64), S = Tensor::empty({k}, DType::F64),
         Vt = Tensor::empty({k, n}, DType::F64);
  ops::svd(A, U, S, Vt);
  Factors f{Tensor::empty({m, rank}), Tensor::empty({rank, n})};
  Tensor Rt = Vt.rows(0, rank).clone();  // r x n, still in the weighted space
  if (wt == ErrorWeighting::Diag) {
    const double* s = mean_abs.data<double>();
    double* r = Rt.data<double>();
    for (int64_t i = 0; i < rank; ++i)
      for (int64_t j = 0; j < n; ++j) r[i * n + j] /= std::max(s[j], 1e-12);
  } else if (wt == ErrorWeighting::Full) {
    Tensor R2 = Tensor::empty({rank, n}, DType::F64);
    ops::gemm(Rt, false, Mi, false, R2);
    Rt = R2;
  }
  const double* u = U.data<double>();
  const double* sv = S.data<double>();
  float* L = f.L.data<float>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < rank; ++j) L[i * rank + j] = float(u[i * k + j] * sv[j]);
  const double* r = Rt.data<double>();
  float* R = f.R.data<float>();
  for (int64_t i = 0; i < rank * n; ++i) R[i] = float(r[i]);
  return f;
}

}  // namespace lrq
