// CPU side of the calibration-statistics primitives and the synthetic fill (backend/ops.h).
#include <cmath>

#include "backend/sketch_rng.h"
#include "backend/cpu/cpu_ops.h"

namespace lrq::cpu {

void accumulate(const Tensor& acc, const Tensor& x, double alpha) {
  double* a = acc.data<double>();
  const int64_t n = acc.numel();
  if (x.dtype() == DType::F32) {
    const float* p = x.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] += alpha * double(p[i]);
  } else {
    const double* p = x.data<double>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] += alpha * p[i];
  }
}

void accumulate_symmetric(const Tensor& acc, const Tensor& x) {
  const int64_t n = acc.dim(0);
  double* a = acc.data<double>();
  const float* p = x.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      a[i * n + j] += double(j >= i ? p[i * n + j] : p[j * n + i]);
}

void xtx(const Tensor& X, const Tensor& G, bool accumulate) {
  gemm(X, true, X, false, G, 1.0, accumulate ? 1.0 : 0.0);
}

void add_abs_col_sums(const Tensor& x, const Tensor& acc) {
  const int64_t T = x.dim(0), n = x.dim(1);
  const float* X = x.data<float>();
  double* m = acc.data<double>();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < n; ++j) m[j] += std::fabs(X[t * n + j]);
}

double dot(const Tensor& A, const Tensor& B) {
  const double* a = A.data<double>();
  const double* b = B.data<double>();
  double s = 0;
  for (int64_t i = 0; i < A.numel(); ++i) s += a[i] * b[i];
  return s;
}

void fill_randn(const Tensor& X, uint64_t seed, double std) {
  const int64_t n = X.numel();
  switch (X.dtype()) {
    case DType::F32: {
      float* p = X.data<float>();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) p[i] = float(std * sketch_rng::normal(seed, uint64_t(i)));
      break;
    }
    case DType::BF16:
    case DType::F16: {
      uint16_t* p = X.data<uint16_t>();
      const bool bf = X.dtype() == DType::BF16;
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float v = float(std * sketch_rng::normal(seed, uint64_t(i)));
        p[i] = bf ? f32_to_bf16(v) : f32_to_f16(v);
      }
      break;
    }
    default: break;  // checks::fill_randn admits no other dtype
  }
}

Tensor to_bf16(const Tensor& x) { return x.to(DType::BF16); }

int64_t first_nonfinite(const Tensor& x) {
  const uint16_t* h = x.data<uint16_t>();
  for (int64_t i = 0; i < x.numel(); ++i)
    if ((h[i] & 0x7c00) == 0x7c00) return i;  // all-ones exponent: inf or NaN
  return -1;
}

}  // namespace lrq::cpu
