// Reading the packed code layout (formats/packed_weight.h) on the GPU: shared by the packed and
// the LoRDS kernels. A chunk holds 32 values in 4*b bytes; lane `sub` (0-3) of a quad owns
// values 8*sub .. 8*sub+7 of it. Include from .cu files only.
#pragma once
#include <cstdint>

namespace lrq::cuda {
namespace {

constexpr int kChunkValues = 32;

// Streaming loads of codes: read once, so they should not evict x from L1.
__device__ __forceinline__ uint2 ld_stream_v2(const uint8_t* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ uint32_t ld_stream_u32(const uint8_t* p) {
  uint32_t v;
  asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

// Byte offset, within a chunk, of the words lane `sub` reads (see the file comment).
template <int B>
__device__ __forceinline__ int lane_offset(int sub) {
  return B == 8 ? 8 * sub : B == 4 ? 8 * (sub & 1) : 0;
}

// The words of a chunk that lane `sub` needs; `p` is the chunk plus lane_offset<B>(sub).
template <int B>
__device__ __forceinline__ void load_chunk(const uint8_t* p, uint32_t w[3]) {
  if constexpr (B == 3) {
    w[0] = ld_stream_u32(p);
    w[1] = ld_stream_u32(p + 4);
    w[2] = ld_stream_u32(p + 8);
  } else {
    const uint2 v = ld_stream_v2(p);
    w[0] = v.x;
    w[1] = v.y;
    w[2] = 0;
  }
}

// Byte k of `word` as an exact float (the word holds four codes, one per byte).
__device__ __forceinline__ float byte_as_float(uint32_t word, int k) {
  return __int_as_float(int(__byte_perm(word, 0x4B000000u, 0x7540u | unsigned(k)))) - 8388608.0f;
}
__device__ __forceinline__ float small_as_float(uint32_t code) {
  return __int_as_float(int(code | 0x4B000000u)) - 8388608.0f;
}

// Values 8*sub .. 8*sub+7 of the chunk: codes as floats, or codebook entries when LUT.
template <int B, bool LUT>
__device__ __forceinline__ void decode8(const uint32_t w[3], int sub, const float* book,
                                        float v[8]) {
  if constexpr (B == 3) {
    const unsigned sh = 3u * unsigned(sub);
    const uint32_t a0 = __funnelshift_r(w[0], w[1], sh), a1 = __funnelshift_r(w[1], w[2], sh),
                   a2 = w[2] >> sh;
    const uint32_t f[8] = {a0, a0 >> 12, a0 >> 24, a1 >> 4, a1 >> 16, a1 >> 28, a2 >> 8, a2 >> 20};
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = LUT ? book[f[k] & 7u] : small_as_float(f[k] & 7u);
  } else {
    uint32_t c0 = w[0], c1 = w[1];
    if constexpr (B == 4) {
      const unsigned sh = 4u * unsigned(sub >> 1);
      c0 = (c0 >> sh) & 0x0F0F0F0Fu;
      c1 = (c1 >> sh) & 0x0F0F0F0Fu;
    } else if constexpr (B == 2) {
      const unsigned sh = 2u * unsigned(sub);
      c0 = (c0 >> sh) & 0x03030303u;
      c1 = (c1 >> sh) & 0x03030303u;
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (LUT) {
        v[k] = book[(c0 >> (8 * k)) & 0xFFu];
        v[k + 4] = book[(c1 >> (8 * k)) & 0xFFu];
      } else {
        v[k] = byte_as_float(c0, k);
        v[k + 4] = byte_as_float(c1, k);
      }
    }
  }
}

}  // namespace
}  // namespace lrq::cuda
