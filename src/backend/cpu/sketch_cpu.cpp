// Sketching primitives on the CPU: the counter-based Gaussian, the double-precision Gram matrix
// and Cholesky QR. The GPU runs the same algorithms (backend/cuda/sketch_cuda.cu).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/sketch_rng.h"

namespace lrq::cpu {
namespace {

std::vector<double> as_f64(const Tensor& A) {
  const int64_t n = A.numel();
  std::vector<double> a(static_cast<size_t>(n));
  if (A.dtype() == DType::F64) {
    std::copy(A.data<double>(), A.data<double>() + n, a.begin());
  } else {
    const float* p = A.data<float>();
    for (int64_t i = 0; i < n; ++i) a[size_t(i)] = p[i];
  }
  return a;
}

// G (k x k) = A^T A for row-major A (m x k) held in double.
void gram64(const std::vector<double>& a, int64_t m, int64_t k, double* g) {
  gemm_rm<double>(true, false, k, k, m, 1.0, a.data(), k, a.data(), k, 0.0, g, k);
}

}  // namespace

void fill_gaussian(const Tensor& X, uint64_t key) {
  float* p = X.data<float>();
  const int64_t n = X.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < (n + 1) / 2; ++i) {
    float x0, x1;
    sketch_rng::gaussian_pair(key, uint64_t(i), x0, x1);
    p[2 * i] = x0;
    if (2 * i + 1 < n) p[2 * i + 1] = x1;
  }
}

void gram(const Tensor& A, const Tensor& G) {
  const int64_t m = A.dim(0), k = A.dim(1);
  if (k == 0) return;
  if (m == 0) {
    std::fill(G.data<double>(), G.data<double>() + k * k, 0.0);
    return;
  }
  gram64(as_f64(A), m, k, G.data<double>());
}

void cholesky_drop_inverse(double* G, int64_t k, double tol, double* X) {
  // Upper R with R^T R = G, built in place in G's upper triangle; a dropped pivot leaves a zero
  // row, so later columns are orthogonalized against the kept ones only.
  std::vector<double> diag(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) diag[size_t(j)] = G[j * k + j];
  std::vector<char> keep(static_cast<size_t>(k), 0);
  for (int64_t j = 0; j < k; ++j) {
    double d = G[j * k + j];
    for (int64_t i = 0; i < j; ++i) d -= G[i * k + j] * G[i * k + j];
    const bool kept = diag[size_t(j)] > 0 && d > tol * tol * diag[size_t(j)] && std::isfinite(d);
    keep[size_t(j)] = kept;
    const double r = kept ? std::sqrt(d) : 0.0;
    G[j * k + j] = r;
    for (int64_t l = j + 1; l < k; ++l) {
      if (!kept) {
        G[j * k + l] = 0;
        continue;
      }
      double v = G[j * k + l];
      for (int64_t i = 0; i < j; ++i) v -= G[i * k + j] * G[i * k + l];
      G[j * k + l] = v / r;
    }
  }
  // X = R^-1 on the kept indices, column by column (back substitution).
  std::fill(X, X + k * k, 0.0);
  for (int64_t c = 0; c < k; ++c) {
    if (!keep[size_t(c)]) continue;
    X[c * k + c] = 1 / G[c * k + c];
    for (int64_t i = c - 1; i >= 0; --i) {
      if (!keep[size_t(i)]) continue;
      double v = 0;
      for (int64_t l = i + 1; l <= c; ++l) v += G[i * k + l] * X[l * k + c];
      X[i * k + c] = -v / G[i * k + i];
    }
  }
}

void cholesky_qr(const Tensor& A, int passes) {
  const int64_t m = A.dim(0), k = A.dim(1);
  if (k == 0) return;
  const double tol = sketch_rng::cholesky_qr_drop_tol(A.dtype() == DType::F32);
  std::vector<double> g(static_cast<size_t>(k * k)), x(static_cast<size_t>(k * k)), q(static_cast<size_t>(m * k));
  for (int p = 0; p < passes; ++p) {
    const std::vector<double> a = as_f64(A);
    gram64(a, m, k, g.data());
    cholesky_drop_inverse(g.data(), k, tol, x.data());
    gemm_rm<double>(false, false, m, k, k, 1.0, a.data(), k, x.data(), k, 0.0, q.data(), k);
    if (A.dtype() == DType::F64) {
      std::copy(q.begin(), q.end(), A.data<double>());
    } else {
      float* out = A.data<float>();
      for (int64_t i = 0; i < m * k; ++i) out[i] = float(q[size_t(i)]);
    }
  }
}

}  // namespace lrq::cpu
