// Fake quantization of activations on the GPU (a8, kv8, a8=tensor), the twins of
// backend/cpu/act_quant_cpu.cpp: the same F32 operations, each rounded explicitly (__fdiv_rn,
// __fmul_rn: no contraction into fused multiply-adds), so CPU and GPU agree bit for bit
// (tests/act_quant_gpu_test.cpp).
#include <cmath>
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"

namespace lrq::cuda {
namespace {

constexpr int kThreads = 256;

// One CTA per row: min and max over the row, then every element on the row's grid. Min and max
// are exact, so the reduction order does not matter.
__global__ void fake_quant_rows_kernel(float* x, int64_t n, float maxq) {
  float* row = x + int64_t(blockIdx.x) * n;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    lo = fminf(lo, row[j]);
    hi = fmaxf(hi, row[j]);
  }
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  __shared__ float slo[kThreads / 32], shi[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    slo[warp] = lo;
    shi[warp] = hi;
  }
  __syncthreads();
  lo = slo[0];
  hi = shi[0];
  for (int w = 1; w < int(blockDim.x / 32); ++w) {
    lo = fminf(lo, slo[w]);
    hi = fmaxf(hi, shi[w]);
  }
  const float step = __fdiv_rn(__fsub_rn(hi, lo), maxq);
  if (!(hi > lo) || !isfinite(step) || !(step > 0)) return;  // as the CPU: row unchanged
  const float zero = rintf(__fdiv_rn(-lo, step));
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float q = fminf(fmaxf(__fadd_rn(rintf(__fdiv_rn(row[j], step)), zero), 0.0f), maxq);
    row[j] = __fmul_rn(__fsub_rn(q, zero), step);
  }
}

__global__ void fake_quant_tensor_kernel(float* x, int64_t n, float step, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] = __fmul_rn(fminf(fmaxf(rintf(__fdiv_rn(x[i], step)), lo), hi), step);
}

}  // namespace

void fake_quant_rows(const Tensor& x, int bits) {
  const int64_t rows = x.dim(0), n = x.dim(1);
  if (rows == 0 || n == 0) return;
  if (rows > INT32_MAX) bad_args("fake_quant_rows", "more rows than one launch covers");
  fake_quant_rows_kernel<<<unsigned(rows), kThreads, 0, stream()>>>(x.data<float>(), n,
                                                                    float((1 << bits) - 1));
  LRQ_CUDA_LAUNCHED();
}

void fake_quant_tensor(const Tensor& x, float step, int bits) {
  const int64_t n = x.numel();
  if (n == 0) return;
  fake_quant_tensor_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
      x.data<float>(), n, step, -float(1 << (bits - 1)), float((1 << (bits - 1)) - 1));
  LRQ_CUDA_LAUNCHED();
}

}  // namespace lrq::cuda
