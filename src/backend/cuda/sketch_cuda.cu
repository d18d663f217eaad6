// Sketching primitives on the GPU: the counter-based Gaussian drawn on the device, the Gram
// matrix and Cholesky QR in double. Same results as backend/cpu/sketch_cpu.cpp (the k x k
// factor and inverse by one elimination instead of a factorization and a substitution). For
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
// gram_reduce_kernel adds the partials in a fixed order (no atomics, so the result does not
// depend on scheduling). Replaces convert + a split-K DGEMM + its reduction (~14 us per call at
// 4096 x 40). A thread keeps kGramAcc upper-triangle entries in flight: one entry at a time was
// a chain of 64 dependent shared-memory round trips per entry (~10 us per call, now 8.6 on the
// H100). Tried and
// slower (bench/NOTES.md): up to 21 entries per thread in registers (50 us), and the Cholesky
// kernel summing the partials itself as one CTA (+30 us).
constexpr int kGramRows = 64, kGramMaxCtas = 256, kGramAcc = 4;
constexpr int kUpperMax = kDeviceCholMax * (kDeviceCholMax + 1) / 2;
template <class T>
__global__ void __launch_bounds__(kSmallThreads)
    gram_partial_kernel(const T* __restrict__ A, int64_t m, int k, double* __restrict__ part) {
  __shared__ double tile[kGramRows * kDeviceCholMax];
  __shared__ uint16_t upper[kUpperMax];  // a * k + b of the t-th entry with b >= a
  for (int e = threadIdx.x; e < k * k; e += kSmallThreads) {
    const int a = e / k, b = e - a * k;
    if (b >= a) upper[a * k - a * (a - 1) / 2 + (b - a)] = uint16_t(e);
  }
  const int nup = k * (k + 1) / 2;
  double* out = part + int64_t(blockIdx.x) * k * k;
  bool first = true;
  for (int64_t r0 = int64_t(blockIdx.x) * kGramRows; r0 < m; r0 += int64_t(gridDim.x) * kGramRows) {
    const int rows = int(m - r0 < kGramRows ? m - r0 : kGramRows);
    __syncthreads();  // the previous chunk's tile is used up (and `upper` is written)
    for (int e = threadIdx.x; e < rows * k; e += kSmallThreads) tile[e] = double(A[r0 * k + e]);
    __syncthreads();
    for (int t0 = threadIdx.x; t0 < nup; t0 += kGramAcc * kSmallThreads) {
      int ia[kGramAcc], ib[kGramAcc], ie[kGramAcc];
      double s[kGramAcc];
#pragma unroll
      for (int q = 0; q < kGramAcc; ++q) {
        const int t = t0 + q * kSmallThreads;
        ie[q] = t < nup ? upper[t] : -1;
        const int e = ie[q] < 0 ? 0 : ie[q];  // a spare slot computes entry 0 and drops it
        ia[q] = e / k;
        ib[q] = e - ia[q] * k;
        s[q] = first || ie[q] < 0 ? 0.0 : out[e];
      }
      for (int r = 0; r < rows; ++r) {
        const double* row = tile + r * k;
#pragma unroll
        for (int q = 0; q < kGramAcc; ++q) s[q] += row[ia[q]] * row[ib[q]];
      }
#pragma unroll
      for (int q = 0; q < kGramAcc; ++q)
        if (ie[q] >= 0) out[ie[q]] = s[q];
    }
    first = false;
  }
}

// Entry (a, b) of G: the partials' (min, max) entries. Warp w of a CTA adds partials w, w + 8,
// ... for 32 consecutive entries (loads coalesced, eight in flight per entry instead of one
// chain over all partials); warp 0 then adds the eight sums in warp order.
__global__ void __launch_bounds__(kSmallThreads)
    gram_reduce_kernel(const double* __restrict__ part, int ctas, int k, double* __restrict__ G) {
  __shared__ double sums[kRowsStep][32];
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, e = blockIdx.x * 32 + lane;
  double s = 0;
  if (e < k * k) {
    const int a = e / k, b = e % k, u = min(a, b) * k + max(a, b);
    for (int c = w; c < ctas; c += kRowsStep) s += part[int64_t(c) * k * k + u];
  }
  sums[w][lane] = s;
  __syncthreads();
  if (w == 0 && e < k * k) {
    double t = 0;
    for (int i = 0; i < kRowsStep; ++i) t += sums[i][lane];
    G[e] = t;
  }
}

template <class T>
void gram_small(const T* a, int64_t m, int k, double* g) {
  const int64_t chunks = (m + kGramRows - 1) / kGramRows;
  const int ctas = int(std::min<int64_t>(chunks, kGramMaxCtas));
  DeviceScratch part(size_t(ctas) * size_t(k) * size_t(k) * sizeof(double));
  gram_partial_kernel<T><<<unsigned(ctas), kSmallThreads, 0, stream()>>>(a, m, k, part.as<double>());
  LRQ_CUDA_LAUNCHED();
  gram_reduce_kernel<<<unsigned((k * k + 31) / 32), kSmallThreads, 0, stream()>>>(
      part.as<double>(), ctas, k, g);
  LRQ_CUDA_LAUNCHED();
}
// A is F32 or F64 (checks::gram, checks::cholesky_qr), m x k with k <= kDeviceCholMax.
void gram_small(const Tensor& A, double* g) {
  if (A.dtype() == DType::F32) gram_small(A.data<float>(), A.dim(0), int(A.dim(1)), g);
  else gram_small(A.data<double>(), A.dim(0), int(A.dim(1)), g);
}

// ---- Pivot-dropping Cholesky and inverse, k <= kDeviceCholMax, one CTA
// X = R^-1 for the upper R with R^T R = G (k x k, row-major, double), dropping a pivot whose
// remaining diagonal is below tol^2 times the original (its row and column of X are zero, R's
// row being zero): backend/cpu/sketch_cpu.cpp's cholesky_drop_inverse. The k dependent steps
// make it latency-bound, so the kernel is symmetric Gaussian elimination on M = [G | I]
// without row scaling: step j subtracts (M[j][i] / d_j) row_j from every row i > j (d_j the
// pivot it left), which makes the left half D^(1/2) R and the right half L^-1 with G = L D L^T,
// L unit lower; then R^-T = D^(-1/2) L^-1, so X[i][c] = M[c][k + i] / sqrt(d_c). Step j
// touches the rectangle rows j+1..k-1 x columns j+1..j+k (the left half's trailing columns,
// then the right half's nonzero ones), one barrier and one reciprocal per step. A thread's
// entries of the rectangle (rows ty + 8r, columns tx + 32q) are all loaded before any is
// stored: shared-memory stores the compiler cannot tell apart from the next loads otherwise
// serialize the updates. Measured with profile_lowrank_gpu.sh (bench/NOTES.md, session 8):
// this kernel 14 us at k = 40 (H100; 13.8 on an H200) and 44.5 us at k = 72 (H200); the Cholesky with normalized rows
// plus back substitution it replaces (2k steps, a square root and a division on the chain)
// ~38 us at k = 40. Intermediate builds, not in the repository: one thread per column 51-65
// us; blocking by panels of 8 pivots (warp 0 eliminating inside the panel, then one rank-8
// update of the rows below) 19 and 52 us (H200), the panel's single warp issuing what eight
// shared before.
// The pivot-dropping rule: pivot d (its diagonal was d0 before elimination) is kept.
__device__ __forceinline__ bool pivot_kept(double d, double d0, double tol2) {
  return d0 > 0 && d > tol2 * d0 && isfinite(d);
}

template <int RS, int CS>  // row and column slots per thread: RS >= (k - 1) / 8, CS >= k / 32
__global__ void __launch_bounds__(kSmallThreads)
    cholesky_drop_inverse_kernel(const double* __restrict__ G, int k, double tol,
                                 double* __restrict__ X) {
  extern __shared__ double chol_smem[];  // M (k x 2k, row-major), diag, inv (k each)
  const int k2 = 2 * k;
  double *M = chol_smem, *diag = M + k * k2, *inv = diag + k;
  const int tid = threadIdx.x, tx = tid % 32, ty = tid / 32;
  for (int e = tid; e < k * k; e += kSmallThreads) {
    const int i = e / k, c = e - i * k;
    M[i * k2 + c] = G[e];
    M[i * k2 + k + c] = i == c ? 1.0 : 0.0;
  }
  for (int j = tid; j < k; j += kSmallThreads) diag[j] = G[j * k + j];
  __syncthreads();
  // M[j][j] is final once step j - 1 is done, and no later step writes row j. The left half's
  // lower triangle is never read: the multiplier of row i is M[j][i] (= M[i][j]).
  const double tol2 = tol * tol;
  for (int j = 0; j < k; ++j) {
    const double* rowj = M + j * k2;
    const double d = rowj[j];
    double mj[CS], f[RS], t[RS][CS];
#pragma unroll
    for (int q = 0; q < CS; ++q) {
      const int v = j + 1 + tx + 32 * q;
      mj[q] = v <= j + k ? rowj[v] : 0.0;
    }
#pragma unroll
    for (int r = 0; r < RS; ++r) {
      const int i = j + 1 + ty + kRowsStep * r;
      f[r] = i < k ? rowj[i] : 0.0;
#pragma unroll
      for (int q = 0; q < CS; ++q) {
        const int v = j + 1 + tx + 32 * q;
        t[r][q] = i < k && v <= j + k ? M[i * k2 + v] : 0.0;
      }
    }
    if (pivot_kept(d, diag[j], tol2)) {  // the same on every thread
      const double s = 1.0 / d;
#pragma unroll
      for (int r = 0; r < RS; ++r) {
        const int i = j + 1 + ty + kRowsStep * r;
        const double fs = f[r] * s;
#pragma unroll
        for (int q = 0; q < CS; ++q) {
          const int v = j + 1 + tx + 32 * q;
          if (i < k && v <= j + k) M[i * k2 + v] = t[r][q] - fs * mj[q];
        }
      }
    }
    __syncthreads();
  }
  for (int j = tid; j < k; j += kSmallThreads) {
    const double d = M[j * k2 + j];
    inv[j] = pivot_kept(d, diag[j], tol2) ? 1.0 / sqrt(d) : 0.0;
  }
  __syncthreads();
  for (int e = tid; e < k * k; e += kSmallThreads) {
    const int i = e / k, c = e - i * k;
    X[e] = c >= i ? M[c * k2 + k + i] * inv[c] : 0.0;
  }
}

template <int RS, int CS>
void cholesky_drop_inverse_launch(const double* G, int k, double tol, double* X) {
  constexpr size_t most = size_t(2 * kDeviceCholMax * kDeviceCholMax + 2 * kDeviceCholMax) * 8;
  static const bool opted_in = (allow_smem(cholesky_drop_inverse_kernel<RS, CS>, most), true);
  (void)opted_in;
  const size_t bytes = size_t(2 * k * k + 2 * k) * sizeof(double);
  cholesky_drop_inverse_kernel<RS, CS><<<1, kSmallThreads, bytes, stream()>>>(G, k, tol, X);
  LRQ_CUDA_LAUNCHED();
}

void cholesky_drop_inverse(const double* G, int k, double tol, double* X) {
  // Slots for the sketches' usual k (16 + 8, 32 + 8, 64 + 8 columns); unused slots cost issue.
  static_assert(kDeviceCholMax <= 72, "the largest instance covers k <= 72");
  if (k <= 25) cholesky_drop_inverse_launch<3, 1>(G, k, tol, X);
  else if (k <= 41) cholesky_drop_inverse_launch<5, 2>(G, k, tol, X);
  else cholesky_drop_inverse_launch<9, 3>(G, k, tol, X);
}

// ---- A <- A X in place, k <= kDeviceCholMax
// A m x k row-major (F32 or F64), X k x k upper, double. Each CTA reads its kApplyRows rows
// into shared memory as doubles before writing them back, so in place is safe, and the product
// is exact double arithmetic rounded once to A's type, as the DGEMM + convert it replaces
// (which needed an m x k double scratch and three launches). A thread owns a 4-row x 3-column
// block of the output (rows ty + 8r, columns tx + 32q): per term 7 shared loads feed 12
// independent FMAs. X is exactly zero below its diagonal, so every output runs all k terms
// (the zeros add nothing). 7.7 us at 4096 x 40 on the H100; one output per thread and 8 rows
// per CTA took ~8.
constexpr int kApplyRows = 32, kApplyRowsPerThread = kApplyRows / kRowsStep,
              kApplyCols = (kDeviceCholMax + 31) / 32;
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
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  int col[kApplyCols], row[kApplyRowsPerThread];
#pragma unroll
  for (int q = 0; q < kApplyCols; ++q) col[q] = min(tx + 32 * q, k - 1);  // spares clamp, drop
#pragma unroll
  for (int r = 0; r < kApplyRowsPerThread; ++r) row[r] = min(ty + kRowsStep * r, rows - 1) * k;
  double s[kApplyRowsPerThread][kApplyCols] = {};
  for (int l = 0; l < k; ++l) {
    double x[kApplyCols], a[kApplyRowsPerThread];
#pragma unroll
    for (int q = 0; q < kApplyCols; ++q) x[q] = xs[l * k + col[q]];
#pragma unroll
    for (int r = 0; r < kApplyRowsPerThread; ++r) a[r] = rows_s[row[r] + l];
#pragma unroll
    for (int r = 0; r < kApplyRowsPerThread; ++r)
#pragma unroll
      for (int q = 0; q < kApplyCols; ++q) s[r][q] += a[r] * x[q];
  }
#pragma unroll
  for (int r = 0; r < kApplyRowsPerThread; ++r)
#pragma unroll
    for (int q = 0; q < kApplyCols; ++q) {
      const int rr = ty + kRowsStep * r, c = tx + 32 * q;
      if (rr < rows && c < k) A[(r0 + rr) * k + c] = T(s[r][q]);
    }
}

template <class T>
void apply_right(T* A, int64_t m, int k, const double* X) {
  constexpr size_t most = size_t(kDeviceCholMax * kDeviceCholMax + kApplyRows * kDeviceCholMax) * 8;
  static const bool opted_in = (allow_smem(apply_right_kernel<T>, most), true);  // 60 KB at k = 72
  (void)opted_in;
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
  const int64_t n = X.numel();
  if (n == 0) return;
  gaussian_kernel<<<grid_for((n + 1) / 2, 256), 256, 0, stream()>>>(X.data<float>(), n, key);
  LRQ_CUDA_LAUNCHED();
}

void gram(const Tensor& A, const Tensor& G) {
  const int64_t m = A.dim(0), k = A.dim(1);
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
  const int64_t m = A.dim(0), k = A.dim(1);
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
