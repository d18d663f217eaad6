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

void need(const Tensor& t, DType d, const char* op, const char* what) {
  if (t.dtype() != d)
    bad_args(op, std::string(what) + " must be " + std::string(dtype_name(d)) + ", got " + t.str());
}

template <class T>
__global__ void accumulate_kernel(double* acc, const T* x, double alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    acc[i] += alpha * double(x[i]);
}

// One thread per column walks the rows in order: deterministic, and the reads of a warp are
// 32 adjacent floats of one row, so they coalesce.
__global__ void abs_col_sums_kernel(const float* x, int64_t T, int64_t n, double* acc) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  double s = 0;
  for (int64_t t = 0; t < T; ++t) s += fabs(double(x[t * n + j]));
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

}  // namespace

void accumulate(const Tensor& acc, const Tensor& x, double alpha) {
  need(acc, DType::F64, "accumulate", "acc");
  if (acc.numel() != x.numel()) bad_args("accumulate", acc.str() + " += " + x.str());
  const int64_t n = acc.numel();
  if (n == 0) return;
  if (x.dtype() == DType::F32) {
    accumulate_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(acc.data<double>(),
                                                              x.data<float>(), alpha, n);
  } else {
    need(x, DType::F64, "accumulate", "x");
    accumulate_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(acc.data<double>(),
                                                              x.data<double>(), alpha, n);
  }
  LRQ_CUDA_LAUNCHED();
}

void add_abs_col_sums(const Tensor& x, const Tensor& acc) {
  need(x, DType::F32, "add_abs_col_sums", "x");
  need(acc, DType::F64, "add_abs_col_sums", "acc");
  if (x.ndim() != 2 || acc.numel() != x.dim(1))
    bad_args("add_abs_col_sums", x.str() + " into " + acc.str());
  const int64_t T = x.dim(0), n = x.dim(1);
  if (n == 0 || T == 0) return;
  abs_col_sums_kernel<<<unsigned((n + 127) / 128), 128, 0, stream()>>>(x.data<float>(), T, n,
                                                                     acc.data<double>());
  LRQ_CUDA_LAUNCHED();
}

double dot(const Tensor& A, const Tensor& B) {
  need(A, DType::F64, "dot", "A");
  need(B, DType::F64, "dot", "B");
  if (A.numel() != B.numel()) bad_args("dot", A.str() + " . " + B.str());
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
    default: bad_args("fill_randn", "F32, F16 or BF16 required, got " + X.str());
  }
  LRQ_CUDA_LAUNCHED();
}

void synchronize() { LRQ_CUDA_CHECK(cudaStreamSynchronize(stream())); }

}  // namespace lrq::cuda
