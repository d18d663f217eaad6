// CTA-wide reductions in a fixed order (shuffles within warps, then warp 0 over the warps'
// partials), so a kernel's result does not depend on scheduling. Include from .cu files only.
#pragma once

namespace lrq::cuda {

/// The CTA's reduction of every thread's v by op (identity: op's neutral element), returned
/// to every thread. Every thread of the CTA must call it (it synchronizes); blockDim.x a
/// multiple of 32, at most 1024.
template <class Op>
__device__ __forceinline__ double block_reduce(double v, Op op, double identity) {
  __shared__ double partial[32];
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  __syncthreads();  // the previous call's readers are done with partial
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? partial[lane] : identity;
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  return partial[0];
}

struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct MaxOp {  // a NaN loses (fmax), as the CPU's comparison skips it
  __device__ double operator()(double a, double b) const { return fmax(a, b); }
};

__device__ __forceinline__ double block_sum(double v) { return block_reduce(v, SumOp{}, 0.0); }
/// For non-negative values (the identity is 0).
__device__ __forceinline__ double block_max_nonneg(double v) {
  return block_reduce(v, MaxOp{}, 0.0);
}

}  // namespace lrq::cuda
