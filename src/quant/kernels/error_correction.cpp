#include "quant/kernels/error_correction.h"

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
  const Device dev = H.device();
  Tensor A = H.clone(), w = Tensor::empty({n}, DType::F64, dev),
         V = Tensor::empty({n, n}, DType::F64, dev);
  ops::eigh(A, w, V);
  Tensor Vs = Tensor::empty({n, n}, DType::F64, dev), Vi = Tensor::empty({n, n}, DType::F64, dev);
  if (dev == Device::CPU) {
    const double* ev = w.data<double>();
    const double floor = std::max(ev[n - 1], 1e-30) * 1e-8;
    const double* v = V.data<double>();
    double* a = Vs.data<double>();
    double* b = Vi.data<double>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double e = std::max(ev[j], floor);
        a[i * n + j] = v[i * n + j] * std::sqrt(std::sqrt(e));
        b[i * n + j] = v[i * n + j] / std::sqrt(std::sqrt(e));
      }
  } else {
    // The eigenvalues (n values) come to the host; the n x n scalings stay on the device.
    const Tensor ev = w.to(Device::CPU);
    const double floor = std::max(ev.at<double>(n - 1), 1e-30) * 1e-8;
    Tensor up = Tensor::empty({n}, DType::F64), down = Tensor::empty({n}, DType::F64);
    for (int64_t j = 0; j < n; ++j) {
      const double q = std::sqrt(std::sqrt(std::max(ev.at<double>(j), floor)));
      up.at<double>(j) = q;
      down.at<double>(j) = 1.0 / q;
    }
    Vs.copy_from(V);
    Vi.copy_from(V);
    ops::scale(Vs, 1, {}, up.to(dev));
    ops::scale(Vi, 1, {}, down.to(dev));
  }
  S = Tensor::empty({n, n}, DType::F64, dev);
  Si = Tensor::empty({n, n}, DType::F64, dev);
  ops::gemm(Vs, false, Vs, true, S);   // V e^1/2 V^T
  ops::gemm(Vi, false, Vi, true, Si);  // V e^-1/2 V^T
}

// max(mean |x_j|, 1e-12) (or its inverse) as an F64 vector on `dev`; mean_abs may be anywhere.
Tensor diag_weights(const Tensor& mean_abs, int64_t n, bool inverse, Device dev) {
  const Tensor s = mean_abs.to(Device::CPU);
  Tensor d = Tensor::empty({n}, DType::F64);
  for (int64_t j = 0; j < n; ++j) {
    const double v = std::max(s.at<double>(j), 1e-12);
    d.at<double>(j) = inverse ? 1.0 / v : v;
  }
  return d.to(dev);
}
}  // namespace

Factors fit_error_low_rank(const Tensor& E, int64_t rank, ErrorWeighting wt, const Tensor& H,
                           const Tensor& mean_abs) {
  const int64_t m = E.dim(0), n = E.dim(1);
  rank = std::min({rank, m, n});
  LRQ_ASSERT(rank > 0);
  const Device dev = E.device();
  const bool cpu = dev == Device::CPU;
  if (wt == ErrorWeighting::Full && H.device() != dev)
    fail("lr", "H {} is not on the device of the error {}", H.str(), E.str());
  // Weighted problem in F64: A = E M, then L R = U_r S_r (V_r^T M^-1).
  Tensor A;
  if (cpu) {
    A = E.to(DType::F64).clone();
  } else {
    A = Tensor::zeros({m, n}, DType::F64, dev);
    ops::accumulate(A, E);  // widened on the device
  }
  Tensor M, Mi;
  if (wt == ErrorWeighting::Diag) {
    if (cpu) {
      const double* s = mean_abs.data<double>();
      double* a = A.data<double>();
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) a[i * n + j] *= std::max(s[j], 1e-12);
    } else {
      ops::scale(A, 1, {}, diag_weights(mean_abs, n, false, dev));
    }
  } else if (wt == ErrorWeighting::Full) {
    sqrt_and_inv_sqrt(H, M, Mi);
    Tensor AM = Tensor::empty({m, n}, DType::F64, dev);
    ops::gemm(A, false, M, false, AM);
    A = AM;
  }
  const int64_t k = std::min(m, n);
  Tensor U = Tensor::empty({m, k}, DType::F64, dev), S = Tensor::empty({k}, DType::F64, dev),
         Vt = Tensor::empty({k, n}, DType::F64, dev);
  ops::svd(A, U, S, Vt);
  Tensor Rt = Vt.rows(0, rank).clone();  // r x n, still in the weighted space
  if (wt == ErrorWeighting::Diag) {
    if (cpu) {
      const double* s = mean_abs.data<double>();
      double* r = Rt.data<double>();
      for (int64_t i = 0; i < rank; ++i)
        for (int64_t j = 0; j < n; ++j) r[i * n + j] /= std::max(s[j], 1e-12);
    } else {
      ops::scale(Rt, 1, {}, diag_weights(mean_abs, n, true, dev));
    }
  } else if (wt == ErrorWeighting::Full) {
    Tensor R2 = Tensor::empty({rank, n}, DType::F64, dev);
    ops::gemm(Rt, false, Mi, false, R2);
    Rt = R2;
  }
  if (!cpu) {
    // L = U_r S_r: the leading columns of U as rows of U^T (a view), scaled on the device; then
    // the r (m + n) factor values cross to the host for the F32 rounding.
    Tensor Ut = Tensor::empty({k, m}, DType::F64, dev);
    ops::transpose(U, Ut);
    Tensor Lt = Ut.rows(0, rank).clone();
    ops::scale(Lt, 1, S.rows(0, rank).clone());
    Tensor L64 = Tensor::empty({m, rank}, DType::F64, dev);
    ops::transpose(Lt, L64);
    return {L64.to(Device::CPU).to(DType::F32).to(dev), Rt.to(Device::CPU).to(DType::F32).to(dev)};
  }
  Factors f{Tensor::empty({m, rank}), Tensor::empty({rank, n})};
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
