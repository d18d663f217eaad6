// Memory-bound matrix utilities on the CPU: diagonal scaling, transposition, norms.
// Each is one pass over the data, parallel over rows with OpenMP.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"

namespace lrq::cpu {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;

template <class T>
void scale_impl(const Tensor& X, double alpha, const Tensor& r, const Tensor& c) {
  const int64_t n = X.ndim() == 2 ? X.dim(1) : X.numel(), m = n ? X.numel() / n : 0;
  T* x = X.data<T>();
  const T* rp = r.defined() ? r.data<T>() : nullptr;
  const T* cp = c.defined() ? c.data<T>() : nullptr;
#pragma omp parallel for schedule(static) if (m * n > kParallelMin)
  for (int64_t i = 0; i < m; ++i) {
    const T a = T(alpha) * (rp ? rp[i] : T(1));
    T* row = x + i * n;
    if (cp)
      for (int64_t j = 0; j < n; ++j) row[j] *= a * cp[j];
    else
      for (int64_t j = 0; j < n; ++j) row[j] *= a;
  }
}

template <class T>
void transpose_impl(const Tensor& A, const Tensor& out) {
  // Square tiles keep both the reads and the writes within a few cache lines per row.
  constexpr int64_t kTile = 32;
  const int64_t m = A.dim(0), n = A.dim(1);
  const T* a = A.data<T>();
  T* b = out.data<T>();
#pragma omp parallel for collapse(2) schedule(static) if (m * n > kParallelMin)
  for (int64_t i0 = 0; i0 < m; i0 += kTile)
    for (int64_t j0 = 0; j0 < n; j0 += kTile) {
      const int64_t i1 = std::min(m, i0 + kTile), j1 = std::min(n, j0 + kTile);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) b[j * m + i] = a[i * n + j];
    }
}

template <class T>
ops::NormStats norm_stats_impl(const Tensor& X) {
  const int64_t n = X.numel();
  const T* x = X.data<T>();
  // Fixed slices summed in order: an OpenMP reduction combines the threads' sums in the order
  // they finish, so with more than two threads the last bits changed from run to run.
  constexpr int64_t kSlice = int64_t(1) << 15;
  const int64_t slices = (n + kSlice - 1) / kSlice;
  std::vector<double> part(static_cast<size_t>(slices));
  std::vector<T> pmax(static_cast<size_t>(slices));
#pragma omp parallel for schedule(static) if (slices > 1)
  for (int64_t sl = 0; sl < slices; ++sl) {
    double sumsq = 0;
    T amax = 0;
    // `simd` lets the compiler reassociate the reductions, which plain C++ forbids for floats.
#pragma omp simd reduction(+ : sumsq) reduction(max : amax)
    for (int64_t i = sl * kSlice; i < std::min(n, (sl + 1) * kSlice); ++i) {
      const T a = std::fabs(x[i]);
      sumsq += double(a) * double(a);
      amax = a > amax ? a : amax;  // a NaN compares false and is skipped
    }
    part[size_t(sl)] = sumsq;
    pmax[size_t(sl)] = amax;
  }
  double sumsq = 0;
  T amax = 0;
  for (int64_t sl = 0; sl < slices; ++sl) {
    sumsq += part[size_t(sl)];
    amax = std::max(amax, pmax[size_t(sl)]);
  }
  return {sumsq, double(amax)};
}

}  // namespace

void scale(const Tensor& X, double alpha, const Tensor& r, const Tensor& c) {
  X.dtype() == DType::F32 ? scale_impl<float>(X, alpha, r, c) : scale_impl<double>(X, alpha, r, c);
}

void transpose(const Tensor& A, const Tensor& out) {
  A.dtype() == DType::F32 ? transpose_impl<float>(A, out) : transpose_impl<double>(A, out);
}

void permute_scale_cols(const Tensor& x, const Tensor& perm, const Tensor& scale,
                        const Tensor& out) {
  const int64_t n = x.ndim() ? x.dim(-1) : 0, T = n ? x.numel() / n : 0;
  const bool f64 = x.dtype() == DType::F64 && !scale.defined();
  const int32_t* p = perm.defined() ? perm.data<int32_t>() : nullptr;
  if (p)
    for (int64_t i = 0; i < n; ++i)
      if (p[i] < 0 || p[i] >= n)
        fail("", "permute_scale_cols: perm[{}] = {} outside [0, {})", i, p[i], n);
  if (f64) {
    const double* a = x.data<double>();
    double* b = out.data<double>();
#pragma omp parallel for schedule(static) if (T * n > kParallelMin)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < n; ++i) b[t * n + i] = a[t * n + (p ? p[i] : i)];
    return;
  }
  std::vector<float> s;
  if (scale.defined()) {
    s.resize(size_t(n));
    convert_to_f32(scale.raw(), scale.dtype(), s.data(), size_t(n));
  }
  const float* a = x.data<float>();
  float* b = out.data<float>();
#pragma omp parallel for schedule(static) if (T * n > kParallelMin)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = a + t * n;
    float* yr = b + t * n;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = p ? p[i] : i;
      yr[i] = s.empty() ? xr[j] : xr[j] / s[size_t(j)];
    }
  }
}

ops::NormStats norm_stats(const Tensor& X) {
  return X.dtype() == DType::F32 ? norm_stats_impl<float>(X) : norm_stats_impl<double>(X);
}

}  // namespace lrq::cpu
