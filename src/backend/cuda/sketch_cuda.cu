// Sketching primitives on the GPU: the counter-based Gaussian drawn on the device, the Gram
// matrix and Cholesky QR in double. Same algorithms as backend/cpu/sketch_cpu.cpp. For
// k <= kDeviceCholMax (the sketches' 40-72 columns) everything stays on the device in small
// kernels of our own: the Gram matrix by row chunks, the k x k pivot-dropping Cholesky and
// inverse as one CTA, the product A X in place. cuBLAS's DGEMMs at these shapes (a split-K
// reduction for A^T A, conversions to and from an F64 copy) and a host round trip per pass
// (it drained the stream and stopped the host from queueing ahead) cost more (bench/NOTES.md).
// Larger k goes through DGEMMs and the CPU's routine.
#include <algorithm>
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

constexpr int kDeviceCholMax = 72;
constexpr int kSmallThreads = 256, kRowsStep = kSmallThreads / 32;

// ---- Gram matrix, k <= kDeviceCholMax
// G = A^T A for A (m x k row-major, F32 or F64) in double, deterministically: CTA c sums row
// chunks c, c + grid, ... (kGramRows rows each) into its own partial (upper triangle), and
// gram_reduce_kernel adds the partials in CTA order (no atomics, so the result does not depend
// on scheduling). Replaces convert + a split-K DGEMM + its reduction (~14 us per call at
// 4096 x 40). Tried and slower (bench/NOTES.md): up to 21 entries per thread in registers
// (50 us), and the Cholesky kernel summing the partials itself as one CTA (+30 us).
constexpr int kGramRows = 64, kGramMaxCtas = 256;
template <class T>
__global__ void __launch_bounds__(kSmallThreads)
    gram_partial_kernel(const T* __restrict__ A, int64_t m, int k, double* __restrict__ part) {
  __shared__ double tile[kGramRows * kDeviceCholMax];
  double* out = part + int64_t(blockIdx.x) * k * k;
  bool first = true;
  for (int64_t r0 = int64_t(blockIdx.x) * kGramRows; r0 < m; r0 += int64_t(gridDim.x) * kGramRows) {
    const int rows = int(m - r0 < kGramRows ? m - r0 : kGramRows);
    __syncthreads();  // the previous chunk's tile is used up
    for (int e = threadIdx.x; e < rows * k; e += kSmallThreads) tile[e] = double(A[r0 * k + e]);
    __syncthreads();
    for (int e = threadIdx.x; e < k * k; e += kSmallThreads) {
      const int a = e / k, b = e % k;
      if (b < a) continue;  // the lower triangle is the mirror, filled by the reduction
      double s = first ? 0.0 : out[e];
      for (int r = 0; r < rows; ++r) s += tile[r * k + a] * tile[r * k + b];
      out[e] = s;
    }
    first = false;
  }
}

// Entry (a, b) of G: the partials' (min, max) entries added in CTA order.
__global__ void gram_reduce_kernel(const double* __restrict__ part, int ctas, int k,
                                   double* __restrict__ G) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= k * k) return;
  const int a = e / k, b = e % k, u = min(a, b) * k + max(a, b);
  double s = 0;
  for (int c = 0; c < ctas; ++c) s += part[int64_t(c) * k * k + u];
  G[e] = s;
}

template <class T>
void gram_small(const T* a, int64_t m, int k, double* g) {
  const int64_t chunks = (m + kGramRows - 1) / kGramRows;
  const int ctas = int(std::min<int64_t>(chunks, kGramMaxCtas));
  DeviceScratch part(size_t(ctas) * size_t(k) * size_t(k) * sizeof(double));
  gram_partial_kernel<T><<<unsigned(ctas), kSmallThreads, 0, stream()>>>(a, m, k, part.as<double>());
  LRQ_CUDA_LAUNCHED();
  gram_reduce_kernel<<<unsigned((k * k + 255) / 256), 256, 0, stream()>>>(part.as<double>(), ctas,
                                                                          k, g);
  LRQ_CUDA_LAUNCHED();
}
// A is F32 or F64 (need_tall), m x k with k <= kDeviceCholMax.
void gram_small(const Tensor& A, double* g) {
  if (A.dtype() == DType::F32) gram_small(A.data<float>(), A.dim(0), int(A.dim(1)), g);
  else gram_small(A.data<double>(), A.dim(0), int(A.dim(1)), g);
}

// ---- Pivot-dropping Cholesky and inverse, k <= kDeviceCholMax, one CTA
// Upper R with R^T R = G (k x k, row-major, double), dropping a pivot whose remaining diagonal
// is below tol^2 times the original (its row of R is zero), then X = R^-1 on the kept indices,
// 0 elsewhere: backend/cpu/sketch_cpu.cpp's cholesky_drop_inverse. Right-looking: every step
// is one parallel update of the trailing triangle between two barriers, each entry still
// receiving its updates in the CPU's order (rows 0, 1, ...). Threads are a 32 x 8 grid, lanes
// along columns (conflict-free rows of shared memory), warps along rows, so no thread divides
// an index. The 2k dependent steps still make it the largest kernel of a sketch (~40 us at
// k = 40; the left-looking version with a dot product per thread ~50 us; a forward
// substitution per row of A instead of the inverse was slower; bench/NOTES.md).
__global__ void __launch_bounds__(kSmallThreads)
    cholesky_drop_inverse_kernel(const double* __restrict__ G, int k, double tol,
                                 double* __restrict__ X) {
  extern __shared__ double chol_smem[];  // R, W (k x k each), diag (k), keep (k bytes)
  double *R = chol_smem, *W = R + k * k, *diag = W + k * k;
  bool* keep = reinterpret_cast<bool*>(diag + k);
  const int tid = threadIdx.x, tx = tid % 32, ty = tid / 32;
  for (int e = tid; e < k * k; e += kSmallThreads) {
    R[e] = G[e];
    W[e] = 0;
  }
  for (int j = tid; j < k; j += kSmallThreads) diag[j] = G[j * k + j];
  __syncthreads();
  for (int j = 0; j < k; ++j) {
    // Row j (columns >= j) has had the kept rows above subtracted.
    const double d = R[j * k + j];
    const bool kept = diag[j] > 0 && d > tol * tol * diag[j] && isfinite(d);
    const double r = kept ? sqrt(d) : 0.0;
    for (int l = j + 1 + tid; l < k; l += kSmallThreads) R[j * k + l] = kept ? R[j * k + l] / r : 0.0;
    __syncthreads();  // everyone has read R[j][j]; row j is final past the diagonal
    if (tid == 0) {
      R[j * k + j] = r;
      keep[j] = kept;
    }
    // R[i][l] -= R[j][i] R[j][l] for j < i <= l.
    for (int l = j + 1 + tx; l < k; l += 32) {
      const double rjl = R[j * k + l];
      for (int i = j + 1 + ((ty - j - 1) & (kRowsStep - 1)); i <= l; i += kRowsStep)
        R[i * k + l] -= R[j * k + i] * rjl;
    }
    __syncthreads();
  }
  // X = R^-1 from the bottom row up, in W: row p first gathers sum_{l > p} R[p][l] X[l][c] as
  // the rows below are finished, then becomes X's row p. A dropped row stays zero, so it adds
  // nothing above.
  for (int i = k - 1; i >= 0; --i) {
    const double rii = R[i * k + i];
    for (int c = i + tid; c < k; c += kSmallThreads)
      W[i * k + c] = keep[i] ? ((c == i ? 1.0 : 0.0) - W[i * k + c]) / rii : 0.0;
    __syncthreads();
    for (int c = i + tx; c < k; c += 32) {  // rows p < i, columns c >= i
      const double xic = W[i * k + c];
      for (int p = ty; p < i; p += kRowsStep) W[p * k + c] += R[p * k + i] * xic;
    }
    __syncthreads();
  }
  for (int e = tid; e < k * k; e += kSmallThreads) X[e] = W[e];  // zero below the diagonal
}

void cholesky_drop_inverse(const double* G, int k, double tol, double* X) {
  constexpr int most = (2 * kDeviceCholMax * kDeviceCholMax + kDeviceCholMax) * 8 + kDeviceCholMax;
  static const bool opted_in = [] {  // 83 KB at k = 72: above the 48 KB default
    LRQ_CUDA_CHECK(cudaFuncSetAttribute(cholesky_drop_inverse_kernel,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, most));
    return true;
  }();
  (void)opted_in;
  const size_t bytes = size_t(2 * k * k + k) * sizeof(double) + size_t(k);
  cholesky_drop_inverse_kernel<<<1, kSmallThreads, bytes, stream()>>>(G, k, tol, X);
  LRQ_CUDA_LAUNCHED();
}

// ---- A <- A X in place, k <= kDeviceCholMax
// A m x k row-major (F32 or F64), X k x k upper, double. Each CTA reads its rows into shared
// memory as doubles before writing them back, so in place is safe, and the product is exact
// double arithmetic rounded once to A's type, as the DGEMM + convert it replaces (which needed
// an m x k double scratch and three launches). Eight rows per CTA: a thread's work is a
// dependent chain of up to k FMAs, so more CTAs rather than longer chains.
constexpr int kApplyRows = 8;
template <class T>
__global__ void __launch_bounds__(kSmallThreads)
    apply_right_kernel(T* __restrict__ A, int64_t m, int k, const double* __restrict__ X) {
  extern __shared__ double apply_smem[];  // X (k x k), then the CTA's rows (kApplyRows x k)
  double *xs = apply_smem, *rows_s = apply_smem + k * k;
  const int64_t r0 = int64_t(blockIdx.x) * kApplyRows;
  const int rows = int(m - r0 < kApplyRows ? m - r0 : kApplyRows);
  for (int e = threadIdx.x; e < k * k; e += blockDim.x) xs[e] = X[e];
  for (int e = threadIdx.x; e < rows * k; e += blockDim.x) rows_s[e] = double(A[r0 * k + e]);
  __syncthreads();
  for (int e = threadIdx.x; e < rows * k; e += blockDim.x) {
    const int r = e / k, c = e % k;
    double s = 0;
    for (int l = 0; l <= c; ++l) s += rows_s[r * k + l] * xs[l * k + c];  // X is upper
    A[r0 * k + e] = T(s);
  }
}

template <class T>
void apply_right(T* A, int64_t m, int k, const double* X) {
  // At most (72^2 + 8 * 72) doubles = 46 KB: under the default limit.
  const size_t bytes = size_t(k * k + kApplyRows * k) * sizeof(double);
  apply_right_kernel<T><<<unsigned((m + kApplyRows - 1) / kApplyRows), kSmallThreads, bytes,
                          stream()>>>(A, m, k, X);
  LRQ_CUDA_LAUNCHED();
}
void apply_right(const Tensor& A, const double* X) {
  if (A.dtype() == DType::F32) apply_right(A.data<float>(), A.dim(0), int(A.dim(1)), X);
  else apply_right(A.data<double>(), A.dim(0), int(A.dim(1)), X);
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
  if (k <= kDeviceCholMax) {
    gram_small(A, G.data<double>());
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
  DeviceScratch g(size_t(k * k) * sizeof(double)), x(size_t(k * k) * sizeof(double));
  if (K <= kDeviceCholMax) {  // the sketches' 40-72 columns: four small launches per pass
    for (int p = 0; p < passes; ++p) {
      gram_small(A, g.as<double>());
      cholesky_drop_inverse(g.as<double>(), K, tol, x.as<double>());
      apply_right(A, x.as<double>());
    }
    return;
  }
  DeviceScratch a64(f32 ? size_t(m * k) * sizeof(double) : 1), q64(size_t(m * k) * sizeof(double));
  std::vector<double> gh(size_t(k * k)), xh(gh.size());
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
