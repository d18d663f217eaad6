// GPU side of the calibration-statistics primitives and the synthetic fill (backend/ops.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "backend/sketch_rng.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"

namespace lrq::cuda {
namespace {

template <class T>
__global__ void accumulate_kernel(double* acc, const T* x, double alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    acc[i] += alpha * double(x[i]);
}

// 32 x 32 tiles through shared memory so both the row and the mirrored column read coalesce.
__global__ void accumulate_symmetric_kernel(double* acc, const float* x, int64_t n) {
  __shared__ float t[32][33];
  const int64_t bi = int64_t(blockIdx.y) * 32, bj = int64_t(blockIdx.x) * 32;
  const int tx = threadIdx.x;
  // The mirrored tile (bj, bi) of x, transposed into shared memory.
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int64_t i = bj + r, j = bi + tx;
    if (i < n && j < n) t[tx][r] = x[i * n + j];
  }
  __syncthreads();
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int64_t i = bi + r, j = bj + tx;
    if (i < n && j < n) acc[i * n + j] += double(j >= i ? x[i * n + j] : t[r][tx]);
  }
}

// Rows are cut into fixed slices of kAbsRows; one thread per (column, slice) sums its slice in
// row order into partial[slice][column], then one thread per column adds the slices in order.
// The result depends only on T, not on the launch, and a 7B window (2048 x 11008) gets
// thousands of CTAs instead of a few dozen threads walking 2048 rows each.
constexpr int64_t kAbsRows = 64;

__global__ void abs_col_partial_kernel(const float* x, int64_t T, int64_t n, double* partial) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, slice = blockIdx.y;
  if (j >= n) return;
  const int64_t t1 = min(T, (slice + 1) * kAbsRows);
  double s = 0;
  for (int64_t t = slice * kAbsRows; t < t1; ++t) s += fabs(double(x[t * n + j]));
  partial[slice * n + j] = s;
}

__global__ void abs_col_sum_slices_kernel(const double* partial, int64_t slices, int64_t n,
                                          double* acc) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  double s = 0;
  for (int64_t k = 0; k < slices; ++k) s += partial[k * n + j];
  acc[j] += s;
}

template <class T>
__global__ void randn_kernel(T* x, int64_t n, uint64_t seed, double std) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = float(std * sketch_rng::normal(seed, uint64_t(i)));
    if constexpr (std::is_same_v<T, float>) x[i] = v;
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) x[i] = __float2bfloat16_rn(v);
    else x[i] = __float2half_rn(v);
  }
}

// The tiles of xtx_upper_bf16, written on the device so the batched GEMM needs no host copy:
// first the full b x b tiles (r, c), c <= r, of the first `full` tile rows, then the tiles
// (nt - 1, c), c < nt - 1, of a ragged last tile row.
__global__ void xtx_tile_pointers_kernel(const uint16_t* xs, float* G, int64_t n, int64_t b,
                                         int nt, int full, const void** A, const void** B,
                                         void** C) {
  int k = 0;
  auto put = [&](int r, int c) {
    A[k] = xs + r * b;
    B[k] = xs + c * b;
    C[k] = G + r * b + c * b * n;
    ++k;
  };
  for (int r = 0; r < full; ++r)
    for (int c = 0; c <= r; ++c) put(r, c);
  if (full < nt)
    for (int c = 0; c < nt - 1; ++c) put(nt - 1, c);
}

// G's row-major upper triangle <- X^T X (+ beta G) from BF16 X (T x n, row-major). Row-major X
// is column-major A = X^T (n x T, ld n) and G = A A^T; the row-major upper triangle is the
// column-major lower one. G is cut into nt x nt tiles of b (the last tile row and column may be
// shorter) and only the tiles with row >= column (column-major) are multiplied, all of one
// size in one batched GEMM: at nt = 8 that is 36 of 64 tiles. (One strided batch per tile
// diagonal ran the short diagonals on a few SMs: 0.152 ms at n = 4096 instead of ~0.08.)
void xtx_upper_bf16(const uint16_t* xs, int64_t T, int64_t n, float beta, float* G) {
  int64_t nt = std::clamp<int64_t>(n / 512, 1, 8);
  const int64_t b = ((n + nt - 1) / nt + 31) / 32 * 32;  // 32-multiples keep tiles aligned
  nt = (n + b - 1) / b;
  const int64_t last = n - (nt - 1) * b;
  const int full = int(last == b ? nt : nt - 1);
  const int n_full = full * (full + 1) / 2, n_ragged = full < nt ? int(nt - 1) : 0;
  const int count = n_full + n_ragged;
  DeviceScratch ptrs(size_t(3 * count) * sizeof(void*));
  const void** A = ptrs.as<const void*>();
  const void** B = A + count;
  void** C = const_cast<void**>(B + count);
  xtx_tile_pointers_kernel<<<1, 1, 0, stream()>>>(xs, G, n, b, int(nt), full, A, B, C);
  LRQ_CUDA_LAUNCHED();
  const float one = 1.0f;
  const int N = blas_int(n, "xtx"), K = blas_int(T, "xtx");
  auto batch = [&](int64_t m, int64_t k, int first, int cnt) {
    if (cnt == 0) return;
    LRQ_CUBLAS_CHECK(cublasGemmBatchedEx(
        cublas(), CUBLAS_OP_N, CUBLAS_OP_T, int(m), int(k), K, &one, A + first, CUDA_R_16BF, N,
        B + first, CUDA_R_16BF, N, &beta, C + first, CUDA_R_32F, N, cnt, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));
  };
  batch(b, b, 0, n_full);
  batch(last, b, n_full, n_ragged);
  if (full < nt) {  // the last diagonal tile, last x last
    const int64_t o = (nt - 1) * b;
    gemm_bf16(false, true, last, last, T, xs + o, n, xs + o, n, beta, G + o + o * n, n);
  }
}

}  // namespace

void accumulate(const Tensor& acc, const Tensor& x, double alpha) {
  const int64_t n = acc.numel();
  if (n == 0) return;
  if (x.dtype() == DType::F32) {
    accumulate_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(acc.data<double>(),
                                                              x.data<float>(), alpha, n);
  } else {
    accumulate_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(acc.data<double>(),
                                                              x.data<double>(), alpha, n);
  }
  LRQ_CUDA_LAUNCHED();
}

void accumulate_symmetric(const Tensor& acc, const Tensor& x) {
  const int64_t n = acc.dim(0);
  if (n == 0) return;
  const unsigned tiles = unsigned((n + 31) / 32);
  accumulate_symmetric_kernel<<<dim3(tiles, tiles), dim3(32, 8), 0, stream()>>>(
      acc.data<double>(), x.data<float>(), n);
  LRQ_CUDA_LAUNCHED();
}

void add_abs_col_sums(const Tensor& x, const Tensor& acc) {
  const int64_t T = x.dim(0), n = x.dim(1);
  if (n == 0 || T == 0) return;
  const int64_t slices = (T + kAbsRows - 1) / kAbsRows;
  if (slices > 65535) bad_args("add_abs_col_sums", "too many rows in " + x.str());
  DeviceScratch partial(size_t(slices * n) * sizeof(double));
  const unsigned cols = unsigned((n + 127) / 128);
  abs_col_partial_kernel<<<dim3(cols, unsigned(slices)), 128, 0, stream()>>>(
      x.data<float>(), T, n, partial.as<double>());
  LRQ_CUDA_LAUNCHED();
  abs_col_sum_slices_kernel<<<cols, 128, 0, stream()>>>(partial.as<double>(), slices, n,
                                                        acc.data<double>());
  LRQ_CUDA_LAUNCHED();
}

void xtx(const Tensor& X, const Tensor& G, bool accumulate) {
  const int64_t T = X.dim(0), n = X.dim(1);
  if (!bf16_matmul()) {
    gemm(X, true, X, false, G, 1.0, accumulate ? 1.0 : 0.0);
    return;
  }
  if (n == 0) return;
  DeviceScratch xs(size_t(std::max<int64_t>(T * n, 1)) * sizeof(uint16_t));
  to_bf16(X.data<float>(), xs.as<uint16_t>(), T * n);
  xtx_upper_bf16(xs.as<uint16_t>(), T, n, accumulate ? 1.0f : 0.0f, G.data<float>());
}

double dot(const Tensor& A, const Tensor& B) {
  // cuBLAS takes 32-bit lengths: sum chunks (a 7B down projection has 45M entries, one chunk).
  const int64_t n = A.numel();
  const int64_t chunk = int64_t(1) << 30;
  double total = 0;
  for (int64_t b = 0; b < n; b += chunk) {
    double part = 0;  // host pointer mode: cublasDdot returns once the result is here
    LRQ_CUBLAS_CHECK(cublasDdot(cublas(), int(std::min(chunk, n - b)), A.data<double>() + b, 1,
                                B.data<double>() + b, 1, &part));
    total += part;
  }
  return total;
}

void fill_randn(const Tensor& X, uint64_t seed, double std) {
  const int64_t n = X.numel();
  if (n == 0) return;
  const unsigned g = grid_for(n, 256);
  switch (X.dtype()) {
    case DType::F32:
      randn_kernel<<<g, 256, 0, stream()>>>(X.data<float>(), n, seed, std);
      break;
    case DType::BF16:
      randn_kernel<<<g, 256, 0, stream()>>>(static_cast<__nv_bfloat16*>(X.raw()), n, seed, std);
      break;
    case DType::F16:
      randn_kernel<<<g, 256, 0, stream()>>>(static_cast<__half*>(X.raw()), n, seed, std);
      break;
    default: break;  // checks::fill_randn admits no other dtype
  }
  LRQ_CUDA_LAUNCHED();
}

void synchronize() { LRQ_CUDA_CHECK(cudaStreamSynchronize(stream())); }

}  // namespace lrq::cuda
