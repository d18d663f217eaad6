// Low-rank error compensation: each weighting attains the optimum of its own objective
// (Eckart-Young on the weighted matrix), and the full weighting gives the lowest output error.
#include <cmath>
#include <random>

#include "backend/ops.h"
#include "quant/kernels/error_correction.h"
#include "test_util.h"

namespace lrq {
namespace {

Tensor randn(int64_t r, int64_t c, uint64_t seed, DType dt = DType::F32) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd;
  Tensor t = Tensor::empty({r, c}, DType::F64);
  for (int64_t i = 0; i < r * c; ++i) t.data<double>()[i] = nd(g);
  return t.to(dt);
}

// ||(E - L R) X^T||_F^2 / T with X the raw inputs (T x n): the output error the fit targets.
double output_err(const Tensor& E, const Factors& f, const Tensor& X) {
  Tensor LR = Tensor::empty(E.shape());
  ops::gemm(f.L, false, f.R, false, LR);
  Tensor D = E.clone();
  for (int64_t i = 0; i < D.numel(); ++i) D.data<float>()[i] -= LR.data<float>()[i];
  Tensor Y = Tensor::empty({X.dim(0), E.dim(0)});
  ops::gemm(X, false, D, true, Y);
  double s = 0;
  for (int64_t i = 0; i < Y.numel(); ++i) s += double(Y.data<float>()[i]) * Y.data<float>()[i];
  return s / double(X.dim(0));
}

TEST(ErrorCorrection, FullWeightingIsTheOutputErrorOptimum) {
  const int64_t m = 48, n = 64, T = 2000, r = 8;
  Tensor E = randn(m, n, 1);
  // Inputs with very unequal, correlated channels, like real activations.
  Tensor Z = randn(T, n, 2), Mix = randn(n, n, 3), X = Tensor::empty({T, n});
  ops::gemm(Z, false, Mix, false, X);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < 4; ++j) X.data<float>()[t * n + j] *= 20.0f;
  Tensor X64 = X.to(DType::F64), H = Tensor::empty({n, n}, DType::F64);
  ops::gemm(X64, true, X64, false, H, 1.0 / T);
  Tensor ma = Tensor::zeros({n}, DType::F64);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < n; ++j) ma.data<double>()[j] += std::fabs(X.data<float>()[t * n + j]) / T;

  double e_none = output_err(E, fit_error_low_rank(E, r, ErrorWeighting::None, H, ma), X);
  double e_diag = output_err(E, fit_error_low_rank(E, r, ErrorWeighting::Diag, H, ma), X);
  double e_full = output_err(E, fit_error_low_rank(E, r, ErrorWeighting::Full, H, ma), X);
  EXPECT_LT(e_full, e_diag);
  EXPECT_LT(e_full, e_none);

  // Optimum: the tail singular values of E H^1/2 (independent computation through eigh + svd).
  Tensor w = Tensor::empty({n}, DType::F64), V = Tensor::empty({n, n}, DType::F64),
         A = H.clone();
  ops::eigh(A, w, V);
  Tensor Vs = V.clone();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) Vs.data<double>()[i * n + j] *= std::sqrt(std::sqrt(w.data<double>()[j]));
  Tensor Hs = Tensor::empty({n, n}, DType::F64), EH = Tensor::empty({m, n}, DType::F64);
  ops::gemm(Vs, false, Vs, true, Hs);
  ops::gemm(E.to(DType::F64), false, Hs, false, EH);
  Tensor U = Tensor::empty({m, m}, DType::F64), S = Tensor::empty({m}, DType::F64),
         Vt = Tensor::empty({m, n}, DType::F64);
  ops::svd(EH, U, S, Vt);
  double tail = 0;
  for (int64_t i = r; i < m; ++i) tail += S.data<double>()[i] * S.data<double>()[i];
  EXPECT_NEAR(e_full / tail, 1.0, 1e-3);

  // Rank min(m, n) with no weighting reproduces E exactly.
  Factors all = fit_error_low_rank(E, m, ErrorWeighting::None, H, ma);
  EXPECT_LT(output_err(E, all, X), 1e-8 * output_err(E, Factors{Tensor::zeros({m, 1}), Tensor::zeros({1, n})}, X));
}

}  // namespace
}  // namespace lrq
