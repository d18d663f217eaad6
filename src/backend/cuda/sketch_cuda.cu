// Sketching primitives on the GPU: the counter-based Gaussian drawn on the device, the Gram
// matrix and Cholesky QR through double-precision GEMMs. Same algorithms as
// backend/cpu/sketch_cpu.cpp. The k x k pivot-dropping Cholesky and inverse run as one CTA on
// the device for k <= kDeviceCholMax (the sketches' 40-72 columns): the kernel itself is k
// dependent steps of ~10 us in all, but a host round trip per pass also drained the stream
// and stopped the host from queueing ahead, which cost more (bench/NOTES.md). Larger k goes
// through the CPU's routine.
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/sketch_rng.h"

namespace lrq::cuda {
namespace {

void need_tall(const Tensor& A, const char* op) {
  if (A.ndim() != 2 || (A.dtype() != DType::F32 && A.dtype() != DType::F64))
    bad_args(op, "an F32 or F64 matrix is required, got " + A.str());
}

__global__ void gaussian_kernel(float* __restrict__ x, int64_t n, uint64_t key) {
  const int64_t pairs = (n + 1) / 2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs;
       i += int64_t(gridDim.x) * blockDim.x) {
    float x0, x1;
    sketch_rng::gaussian_pair(key, uint64_t(i), x0, x1);
    x[2 * i] = x0;
    if (2 * i + 1 < n) x[2 * i + 1] = x1;
  }
}

template <class S, class D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = D(src[i]);
}

template <class S, class D>
void convert(const S* src, D* dst, int64_t n) {
  convert_kernel<S, D><<<grid_for(n, 256), 256, 0, stream()>>>(src, dst, n);
  LRQ_CUDA_LAUNCHED();
}

// A (m x k, row-major) as doubles: A itself when F64, else a converted copy in `scratch`.
const double* as_f64(const Tensor& A, DeviceScratch& scratch) {
  if (A.dtype() == DType::F64) return A.data<double>();
  convert(A.data<float>(), scratch.as<double>(), A.numel());
  return scratch.as<double>();
}

// G (k x k) = A^T A for row-major A (m x k) in double. Column-major, A's buffer reads as
// M = A^T (k x m, ld k), and G = M M^T.
void gram64(const double* a, int m, int k, double* g) {
  const double one = 1, zero = 0;
  LRQ_CUBLAS_CHECK(cublasDgemm(cublas(), CUBLAS_OP_N, CUBLAS_OP_T, k, k, m, &one, a, k, a, k,
                               &zero, g, k));
}

constexpr int kDeviceCholMax = 72;  // R in shared memory: 72^2 doubles = 41.5 KB

// One CTA: upper R with R^T R = G (k x k, row-major, double), dropping a pivot whose remaining
// diagonal is below tol^2 times the original (its row of R is zero), then X = R^-1 on the kept
// indices, 0 elsewhere: backend/cpu/sketch_cpu.cpp's cholesky_drop_inverse, step for step.
__global__ void __launch_bounds__(256) cholesky_drop_inverse_kernel(const double* __restrict__ G,
                                                                    int k, double tol,
                                                                    double* __restrict__ X) {
  __shared__ double R[kDeviceCholMax * kDeviceCholMax];
  __shared__ double v[kDeviceCholMax], diag[kDeviceCholMax];
  __shared__ bool keep[kDeviceCholMax];
  const int tid = threadIdx.x, nt = blockDim.x;
  for (int i = tid; i < k * k; i += nt) R[i] = G[i];
  for (int j = tid; j < k; j += nt) diag[j] = G[j * k + j];
  __syncthreads();
  for (int j = 0; j < k; ++j) {
    // Row j of R (columns l >= j) still holds G's; subtract the kept rows above.
    for (int l = j + tid; l < k; l += nt) {
      double a = R[j * k + l];
      for (int i = 0; i < j; ++i) a -= R[i * k + j] * R[i * k + l];
      v[l] = a;
    }
    __syncthreads();
    const double d = v[j];
    const bool kept = diag[j] > 0 && d > tol * tol * diag[j] && isfinite(d);
    const double r = kept ? sqrt(d) : 0.0;
    for (int l = j + 1 + tid; l < k; l += nt) R[j * k + l] = kept ? v[l] / r : 0.0;
    if (tid == 0) {
      R[j * k + j] = r;
      keep[j] = kept;
    }
    __syncthreads();
  }
  // Column c of X by back substitution, one thread per column.
  for (int c = tid; c < k; c += nt) {
    for (int i = 0; i < k; ++i) X[i * k + c] = 0;
    if (!keep[c]) continue;
    X[c * k + c] = 1 / R[c * k + c];
    for (int i = c - 1; i >= 0; --i) {
      if (!keep[i]) continue;
      double a = 0;
      for (int l = i + 1; l <= c; ++l) a += R[i * k + l] * X[l * k + c];
      X[i * k + c] = -a / R[i * k + i];
    }
  }
}

}  // namespace

void fill_gaussian(const Tensor& X, uint64_t key) {
  if (X.dtype() != DType::F32) bad_args("fill_gaussian", "F32 required, got " + X.str());
  const int64_t n = X.numel();
  if (n == 0) return;
  gaussian_kernel<<<grid_for((n + 1) / 2, 256), 256, 0, stream()>>>(X.data<float>(), n, key);
  LRQ_CUDA_LAUNCHED();
}

void gram(const Tensor& A, const Tensor& G) {
  need_tall(A, "gram");
  const int64_t m = A.dim(0), k = A.dim(1);
  if (G.dtype() != DType::F64 || G.shape() != Shape{k, k})
    bad_args("gram", "G must be F64[" + std::to_string(k) + "," + std::to_string(k) + "] for " +
                         A.str() + ", got " + G.str());
  if (k == 0) return;
  if (m == 0) {
    LRQ_CUDA_CHECK(cudaMemsetAsync(G.raw(), 0, G.nbytes(), stream()));
    return;
  }
  DeviceScratch a64(A.dtype() == DType::F64 ? 1 : size_t(m * k) * sizeof(double));
  gram64(as_f64(A, a64), blas_int(m, "gram"), blas_int(k, "gram"), G.data<double>());
}

void cholesky_qr(const Tensor& A, int passes) {
  need_tall(A, "cholesky_qr");
  const int64_t m = A.dim(0), k = A.dim(1);
  if (m < k) bad_args("cholesky_qr", "needs rows >= columns, got " + A.str());
  if (passes < 1) bad_args("cholesky_qr", "passes must be >= 1, got " + std::to_string(passes));
  if (k == 0) return;
  const int M = blas_int(m, "cholesky_qr"), K = blas_int(k, "cholesky_qr");
  const bool f32 = A.dtype() == DType::F32;
  const double tol = sketch_rng::cholesky_qr_drop_tol(f32);
  DeviceScratch a64(f32 ? size_t(m * k) * sizeof(double) : 1), q64(size_t(m * k) * sizeof(double)),
      g(size_t(k * k) * sizeof(double)), x(size_t(k * k) * sizeof(double));
  std::vector<double> gh(K > kDeviceCholMax ? size_t(k * k) : 0), xh(gh.size());
  for (int p = 0; p < passes; ++p) {
    const double* a = as_f64(A, a64);
    gram64(a, M, K, g.as<double>());
    if (K <= kDeviceCholMax) {
      cholesky_drop_inverse_kernel<<<1, 256, 0, stream()>>>(g.as<double>(), K, tol,
                                                             x.as<double>());
      LRQ_CUDA_LAUNCHED();
    } else {
      LRQ_CUDA_CHECK(cudaMemcpyAsync(gh.data(), g.as<double>(), gh.size() * sizeof(double),
                                     cudaMemcpyDeviceToHost, stream()));
      LRQ_CUDA_CHECK(cudaStreamSynchronize(stream()));
      cpu::cholesky_drop_inverse(gh.data(), k, tol, xh.data());
      // From pageable memory the copy is staged before the call returns, so xh may be reused.
      LRQ_CUDA_CHECK(cudaMemcpyAsync(x.as<double>(), xh.data(), xh.size() * sizeof(double),
                                     cudaMemcpyHostToDevice, stream()));
    }
    // Row-major Q = A X is column-major Q^T = X^T A^T: X's buffer reads as X^T, A's as A^T.
    const double one = 1, zero = 0;
    LRQ_CUBLAS_CHECK(cublasDgemm(cublas(), CUBLAS_OP_N, CUBLAS_OP_N, K, M, K, &one,
                                 x.as<double>(), K, a, K, &zero, q64.as<double>(), K));
    if (f32)
      convert(q64.as<double>(), A.data<float>(), m * k);
    else
      LRQ_CUDA_CHECK(cudaMemcpyAsync(A.raw(), q64.as<double>(), A.nbytes(),
                                     cudaMemcpyDeviceToDevice, stream()));
  }
}

}  // namespace lrq::cuda
