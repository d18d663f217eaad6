// BF16 tensor-core helpers shared by the kernels that call mma.sync directly (the fused
// attention prefill, the packed and LoRDS decode GEMVs). Include from .cu files only.
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

/// c += A B for one m16n8k16 tile: BF16 (mma_bf16) or F16 (mma_f16) operands, F32 accumulators.
#define LRQ_MMA_M16N8K16(name, type)                                                        \
  __device__ __forceinline__ void name(float(&c)[4], const uint32_t(&a)[4], uint32_t b0,    \
                                       uint32_t b1) {                                       \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." type "." type                     \
                 ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"               \
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                           \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));           \
  }
LRQ_MMA_M16N8K16(mma_bf16, "bf16")
LRQ_MMA_M16N8K16(mma_f16, "f16")
#undef LRQ_MMA_M16N8K16

/// Asynchronous copies into shared memory (sm_80+): a thread's copies since the last commit
/// form one group; wait<N> returns once at most N of its groups are still in flight.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
/// 16 bytes global -> shared, bypassing L1; with valid false the 16 bytes become zeros and
/// nothing is read (src must still be a valid address expression, it is not dereferenced).
__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* src, bool valid) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}

/// Four 8x8 BF16 matrices from shared memory: lane l names row l % 8 of matrix l / 8 and
/// receives, of each matrix i, row l / 4, columns 2 (l % 4) and +1 in r[i] (trans: the
/// transposed matrix, so column l / 4, rows 2 (l % 4) and +1).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  const unsigned a = unsigned(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  const unsigned a = unsigned(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

/// 2^x by the SFU alone (flush-to-zero; 2^-inf = 0); relative error ~2^-22, far below the
/// BF16 rounding the attention applies to the result.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace lrq::cuda
