// Memory-bound matrix utilities on the GPU: diagonal scaling, transposition, norms. Same
// semantics as backend/cpu/matrix_cpu.cpp (backend/checks.cpp checks the arguments of both).
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/reduce.cuh"
#include "backend/cuda/widen.cuh"

namespace lrq::cuda {
namespace {

template <class T>
__global__ void scale_kernel(T* x, int64_t m, int64_t n, T alpha, const T* r, const T* c) {
  const int64_t total = m * n;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / n, j = e % n;
    T a = alpha;
    if (r) a *= r[i];
    if (c) a *= c[j];
    x[e] *= a;
  }
}

// 32x32 tiles through shared memory so both the reads and the writes are coalesced (the extra
// column keeps the tile's column reads off a single bank).
template <class T>
__global__ void transpose_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t rows,
                                 int64_t cols) {
  __shared__ T tile[32][33];
  const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = src[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) dst[c * rows + r] = tile[threadIdx.x][i];
  }
}

// Each CTA writes its sum of squares and max |x| (in double) to part[2 * blockIdx.x + 0/1]; the
// host adds the partials in CTA order. One atomicAdd per warp on one address (the version
// before) serialized 32K atomics at 4096^2 (87 us) and summed in whatever order they came.
template <class T>
__global__ void norm_kernel(const T* x, int64_t n, double* part) {
  double s = 0;
  double mx = 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const double a = fabs(double(x[e]));
    s += a * a;
    if (a > mx) mx = a;  // NaN compares false and is skipped, as on the CPU
  }
  s = block_sum(s);
  mx = block_max_nonneg(mx);
  if (threadIdx.x == 0) {
    part[2 * blockIdx.x] = s;
    part[2 * blockIdx.x + 1] = mx;
  }
}

// out[t, i] = x[t, perm[i]] / scale[perm[i]]: the reads are a gather within one row (served by
// L1/L2: a row is at most a few tens of KB), the writes coalesced.
__global__ void permute_scale_kernel(const float* __restrict__ x, const int32_t* __restrict__ perm,
                                     const void* scale, Stored sk, float* __restrict__ out,
                                     int64_t T, int64_t n) {
  const int64_t total = T * n;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / n, i = e - t * n;
    const int64_t j = perm ? perm[i] : i;
    const float v = x[t * n + j];
    out[e] = scale ? v / load_f32(scale, sk, j) : v;
  }
}

// The F64 gather without a scale (methods permute H with it): an exact copy.
__global__ void permute_kernel_f64(const double* __restrict__ x, const int32_t* __restrict__ perm,
                                   double* __restrict__ out, int64_t T, int64_t n) {
  const int64_t total = T * n;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / n, i = e - t * n;
    out[e] = x[t * n + (perm ? perm[i] : i)];
  }
}

int blocks_for(int64_t n) { return int(std::min<int64_t>((n + 255) / 256, 4096)); }

}  // namespace

template <class T>
void transpose_device(const T* src, T* dst, int64_t rows, int64_t cols) {
  if (rows * cols == 0) return;
  const dim3 grid(unsigned((cols + 31) / 32), unsigned((rows + 31) / 32)), block(32, 8);
  transpose_kernel<T><<<grid, block, 0, stream()>>>(src, dst, rows, cols);
  LRQ_CUDA_LAUNCHED();
}
template void transpose_device<float>(const float*, float*, int64_t, int64_t);
template void transpose_device<double>(const double*, double*, int64_t, int64_t);

void scale(const Tensor& X, double alpha, const Tensor& r, const Tensor& c) {
  const int64_t n = X.ndim() == 2 ? X.dim(1) : X.numel(), m = X.ndim() == 2 ? X.dim(0) : 1;
  if (m * n == 0) return;
  if (X.dtype() == DType::F32)
    scale_kernel<float><<<blocks_for(m * n), 256, 0, stream()>>>(
        X.data<float>(), m, n, float(alpha), r.defined() ? r.data<float>() : nullptr,
        c.defined() ? c.data<float>() : nullptr);
  else
    scale_kernel<double><<<blocks_for(m * n), 256, 0, stream()>>>(
        X.data<double>(), m, n, alpha, r.defined() ? r.data<double>() : nullptr,
        c.defined() ? c.data<double>() : nullptr);
  LRQ_CUDA_CHECK(cudaGetLastError());
}

void transpose(const Tensor& A, const Tensor& out) {
  if (A.dtype() == DType::F32)
    transpose_device(A.data<float>(), out.data<float>(), A.dim(0), A.dim(1));
  else
    transpose_device(A.data<double>(), out.data<double>(), A.dim(0), A.dim(1));
}

void permute_scale_cols(const Tensor& x, const Tensor& perm, const Tensor& scale,
                        const Tensor& out) {
  const int64_t n = x.ndim() ? x.dim(-1) : 0, T = n ? x.numel() / n : 0;
  const bool f64 = x.dtype() == DType::F64 && !scale.defined();
  if (T * n == 0) return;
  if (f64) {
    permute_kernel_f64<<<blocks_for(T * n), 256, 0, stream()>>>(
        x.data<double>(), perm.defined() ? perm.data<int32_t>() : nullptr, out.data<double>(), T,
        n);
    LRQ_CUDA_LAUNCHED();
    return;
  }
  const Stored sk = scale.defined() ? stored_kind(scale, "permute_scale_cols") : Stored::F32;
  permute_scale_kernel<<<blocks_for(T * n), 256, 0, stream()>>>(
      x.data<float>(), perm.defined() ? perm.data<int32_t>() : nullptr,
      scale.defined() ? scale.raw() : nullptr, sk, out.data<float>(), T, n);
  LRQ_CUDA_LAUNCHED();
}

ops::NormStats norm_stats(const Tensor& X) {
  const int64_t n = X.numel();
  if (n == 0) return {0.0, 0.0};
  const int ctas = std::min(blocks_for(n), 512);
  DeviceScratch scratch(2 * size_t(ctas) * sizeof(double));
  if (X.dtype() == DType::F32)
    norm_kernel<float><<<ctas, 256, 0, stream()>>>(X.data<float>(), n, scratch.as<double>());
  else
    norm_kernel<double><<<ctas, 256, 0, stream()>>>(X.data<double>(), n, scratch.as<double>());
  LRQ_CUDA_CHECK(cudaGetLastError());
  std::vector<double> part(2 * size_t(ctas));
  LRQ_CUDA_CHECK(cudaMemcpyAsync(part.data(), scratch.as<double>(), part.size() * sizeof(double),
                                 cudaMemcpyDeviceToHost, stream()));
  LRQ_CUDA_CHECK(cudaStreamSynchronize(stream()));
  double host[2] = {0, 0};
  for (int c = 0; c < ctas; ++c) {
    host[0] += part[2 * size_t(c)];
    host[1] = std::max(host[1], part[2 * size_t(c) + 1]);
  }
  return {host[0], host[1]};
}

}  // namespace lrq::cuda
