// BF16 tensor-core helpers shared by the kernels that call mma.sync directly (the fused
// attention prefill, the packed decode GEMV). Include from .cu files only.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4): A (16x16, row-major) a0 =
// (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..); B (16x8, k-major)
// b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g); C (16x8) c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8,
// 2t..). In each 32-bit register the lower k (or n) sits in the low half.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

namespace lrq::cuda {

/// lo -> low half, hi -> high half, each rounded to nearest BF16.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
  uint32_t r;
  memcpy(&r, &v, sizeof r);
  return r;
}

/// c += A B for one m16n8k16 tile: BF16 operands, F32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace lrq::cuda
