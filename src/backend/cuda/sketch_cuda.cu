// Sketching primitives on the GPU: the counter-based Gaussian drawn on the device, the Gram
// matrix and Cholesky QR through double-precision GEMMs. Same algorithms as
// backend/cpu/sketch_cpu.cpp; the k x k Cholesky step is the CPU's own routine (one round trip
// of k x k doubles per pass: a pivot-dropping factorization of a matrix this small would be a
// single-CTA kernel of k dependent steps, not faster than the copy).
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
  std::vector<double> gh(static_cast<size_t>(k * k)), xh(static_cast<size_t>(k * k));
  for (int p = 0; p < passes; ++p) {
    const double* a = as_f64(A, a64);
    gram64(a, M, K, g.as<double>());
    LRQ_CUDA_CHECK(cudaMemcpyAsync(gh.data(), g.as<double>(), gh.size() * sizeof(double),
                                   cudaMemcpyDeviceToHost, stream()));
    LRQ_CUDA_CHECK(cudaStreamSynchronize(stream()));
    cpu::cholesky_drop_inverse(gh.data(), k, tol, xh.data());
    // From pageable memory the copy is staged before the call returns, so xh may be reused.
    LRQ_CUDA_CHECK(cudaMemcpyAsync(x.as<double>(), xh.data(), xh.size() * sizeof(double),
                                   cudaMemcpyHostToDevice, stream()));
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
