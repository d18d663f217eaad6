// LoRDS on the GPU: W_ij = book[c_ij] * s_ij with s_ij = B_i . A_j (ops.h, Lords), and the
// elementwise passes of its refinement.
//
// Decode (T <= 8, 2-4 bits, rank <= 64) never forms S outside registers. A CTA owns 128 rows
// (8 warps x 16) and a slab of 256 columns; it stages that slab's columns of A (transposed,
// k zero-padded to a multiple of 16) and of x in shared memory once. Per 32-column chunk a warp
// forms its 16 x 32 tile of S as four m16n8k16 tensor-core products B_I A_J with K = r: B and
// A are stored in F16, so every product is exact and only the order of the F32 sum differs
// from the CPU's fma chain. The C fragment gives each lane rows g and g+8 at columns 2t, 2t+1
// (+8 per n-tile), and the packed layout interleaves codes by 8 columns, so a lane's codes are
// 2-3 adjacent bytes of the chunk: no shuffles, no staging of codes. Each CTA writes its
// slab's partial row sums; the last CTA of a row block to finish adds the slabs in slab order
// (deterministic, one launch, no float atomics).
//
// Dequantization forms s_ij by the CPU's chain of F32 fmas in k order, so the dequantized
// matrix equals the CPU's bit for bit. Prefill (T > 8) by default dequantizes to BF16 with the
// decode kernel's S tiles and runs one cuBLAS BF16 GEMM per row slab (16-bit activations: issue
// 26's contract); under exact_kernels(), and for 8-bit codes and ranks above 64, it goes through
// slab_gemm: F32 row slabs dequantized by the fma chain, then cuBLAS (BF16 tensor cores under
// set_bf16_matmul), like packed_gemm.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/packed_cuda.h"
#include "backend/cuda/packed_decode.cuh"
#include "backend/cuda/widen.cuh"

namespace lrq::cuda {
namespace {

struct LordsView {
  const uint8_t* codes = nullptr;  // [rows, cols * bits / 8]
  const uint16_t* B = nullptr;     // F16 [rows, rank]
  const uint16_t* A = nullptr;     // F16 [rank, cols], 16-byte aligned
  const float* book = nullptr;     // F32 [2^bits]
  int64_t rows = 0, cols = 0, rank = 0;
  int bits = 0;
};

// ------------------------------------------------------------------ dequantization
// One thread per (row, chunk, sub): eight values, s_j = fma chain over k (as the CPU).
template <int B>
__global__ void lords_dequant_kernel(const LordsView w, int64_t row_begin, int64_t nrows,
                                     float* __restrict__ out) {
  const int64_t nchunks = w.cols / kChunkValues, per_row = nchunks * 4, total = nrows * per_row;
  const int64_t row_bytes = nchunks * 4 * B;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t lr = e / per_row, rem = e - lr * per_row, c = rem >> 2;
    const int sub = int(rem & 3);
    const int64_t r = row_begin + lr, j0 = c * kChunkValues + sub * 8;
    uint32_t wd[3];
    load_chunk<B>(w.codes + r * row_bytes + c * (4 * B) + lane_offset<B>(sub), wd);
    float v[8];
    decode8<B, true>(wd, sub, w.book, v);
    float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    const uint16_t* brow = w.B + r * w.rank;
    for (int64_t k = 0; k < w.rank; ++k) {
      const float bk = f16_bits_to_f32(__ldg(brow + k));
      const uint4 a = __ldg(reinterpret_cast<const uint4*>(w.A + k * w.cols + j0));
      const uint32_t h[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[2 * i] = fmaf(bk, f16_bits_to_f32(uint16_t(h[i] & 0xFFFFu)), s[2 * i]);
        s[2 * i + 1] = fmaf(bk, f16_bits_to_f32(uint16_t(h[i] >> 16)), s[2 * i + 1]);
      }
    }
    float4* dst = reinterpret_cast<float4*>(out + lr * w.cols + j0);
    dst[0] = make_float4(v[0] * s[0], v[1] * s[1], v[2] * s[2], v[3] * s[3]);
    dst[1] = make_float4(v[4] * s[4], v[5] * s[5], v[6] * s[6], v[7] * s[7]);
  }
}

void dequant_rows(const LordsView& w, int64_t r0, int64_t n, float* out) {
  const int64_t work = n * (w.cols / kChunkValues) * 4;
  if (work == 0) return;
  const unsigned blocks = grid_for(work, 256);
  switch (w.bits) {
    case 2: lords_dequant_kernel<2><<<blocks, 256, 0, stream()>>>(w, r0, n, out); break;
    case 3: lords_dequant_kernel<3><<<blocks, 256, 0, stream()>>>(w, r0, n, out); break;
    case 4: lords_dequant_kernel<4><<<blocks, 256, 0, stream()>>>(w, r0, n, out); break;
    default: lords_dequant_kernel<8><<<blocks, 256, 0, stream()>>>(w, r0, n, out); break;
  }
  LRQ_CUDA_LAUNCHED();
}

// ------------------------------------------------------------------ decode GEMV
constexpr int kWarps = 8, kThreads = kWarps * 32;
constexpr int kRowsPerCta = kWarps * 16;
constexpr int kSlabChunks = 8, kSlabCols = kSlabChunks * kChunkValues;
constexpr int64_t kGemvMaxT = 8, kGemvMaxRank = 64;

struct GemvParams {
  LordsView w;
  const float* x;
  float* y;
  float* part;              // [nslabs, T, rows]
  unsigned* done;           // [row blocks], zero between launches
  int64_t row_bytes;
  int T, nslabs;
  bool accumulate;
};

// The bytes of chunk `p` that lane t of a quad needs for columns 2t, 2t+1 (+8 per n-tile), as
// one word: b = 4: bytes 2t, 2t+1 (low nibbles: n-tile 0, high: 2) and 8+2t, 9+2t (1 and 3) in
// the upper half; b = 2: bytes 2t, 2t+1 (n-tile i in bit pair i); b = 3: the 24 bits at bit 24t
// (two 12-bit fields, n-tile i in bits 3i of each).
template <int B>
__device__ __forceinline__ uint32_t lane_codes(const uint8_t* p, int t) {
  if constexpr (B == 4) {
    const uint32_t lo = __ldg(reinterpret_cast<const uint16_t*>(p + 2 * t));
    const uint32_t hi = __ldg(reinterpret_cast<const uint16_t*>(p + 8 + 2 * t));
    return lo | hi << 16;
  } else if constexpr (B == 2) {
    return __ldg(reinterpret_cast<const uint16_t*>(p + 2 * t));
  } else {
    const uint32_t* wp = reinterpret_cast<const uint32_t*>(p);
    const uint32_t lo = __ldg(wp + (3 * t) / 4), hi = __ldg(wp + (3 * t + 2) / 4);
    return __funnelshift_r(lo, hi, 8u * unsigned((3 * t) % 4)) & 0xFFFFFFu;
  }
}

// Code of column 8 nt + 2t + e from lane_codes' word.
template <int B>
__device__ __forceinline__ uint32_t code_at(uint32_t word, int nt, int e) {
  if constexpr (B == 4) {
    const uint32_t byte = word >> (16 * (nt & 1) + 8 * e) & 0xFFu;
    return nt < 2 ? byte & 0xFu : byte >> 4;
  } else if constexpr (B == 2) {
    return word >> (8 * e + 2 * nt) & 3u;
  } else {
    return word >> (12 * e + 3 * nt) & 7u;
  }
}

// B's rows ra and rb as the A operand of m16n8k16 products with K = r (KS steps of 16, zero
// beyond the rank): the tensor-core half of s_ij = B_i . A_j, shared by decode and dequantization.
template <int KS>
__device__ __forceinline__ void load_b_fragments(const LordsView& w, int64_t ra, int64_t rb,
                                                 int t4, uint32_t (&a)[KS][4]) {
  const uint16_t* Ba = w.B + ra * w.rank;
  const uint16_t* Bb = w.B + rb * w.rank;
  auto bk = [&](const uint16_t* row, int k) -> uint32_t {
    return k < w.rank ? uint32_t(__ldg(row + k)) : 0u;
  };
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    const int k0 = ks * 16 + 2 * t4;
    a[ks][0] = bk(Ba, k0) | bk(Ba, k0 + 1) << 16;
    a[ks][1] = bk(Bb, k0) | bk(Bb, k0 + 1) << 16;
    a[ks][2] = bk(Ba, k0 + 8) | bk(Ba, k0 + 9) << 16;
    a[ks][3] = bk(Bb, k0 + 8) | bk(Bb, k0 + 9) << 16;
  }
}

// A's slab of columns [j_base, j_base + ncols) transposed into shared memory (At[j * LD + k], k
// zero-padded to KP): the other operand, staged once per CTA by all its threads.
template <int KP, int LD>
__device__ __forceinline__ void stage_a_transposed(const LordsView& w, int64_t j_base, int ncols,
                                                   int tid, uint16_t* At) {
  for (int e = tid; e < KP * kSlabCols; e += kThreads) {
    const int k = e / kSlabCols, j = e % kSlabCols;
    At[j * LD + k] = k < w.rank && j < ncols ? __ldg(w.A + k * w.cols + j_base + j) : uint16_t(0);
  }
}

template <int B, int KS, int TT>
__global__ void __launch_bounds__(kThreads) lords_gemv_kernel(const GemvParams p) {
  constexpr int KP = 16 * KS, LD = KP + 8;  // +8 halves: the b-fragment loads hit 32 banks
  __shared__ __align__(16) uint16_t At[kSlabCols * LD];
  __shared__ __align__(16) float xs[TT][kSlabCols];
  __shared__ bool last;
  const LordsView& w = p.w;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int slab = blockIdx.y;
  const int64_t j_base = int64_t(slab) * kSlabCols;
  const int ncols = int(w.cols - j_base < kSlabCols ? w.cols - j_base : kSlabCols);
  stage_a_transposed<KP, LD>(w, j_base, ncols, tid, At);
  for (int e = tid; e < TT * kSlabCols; e += kThreads) {
    const int t = e / kSlabCols, j = e % kSlabCols;
    xs[t][j] = j < ncols ? __ldg(p.x + int64_t(min(t, p.T - 1)) * w.cols + j_base + j) : 0.f;
  }
  // Codebook lookups by shuffle: lane l holds entry l mod 2^B.
  const float book_lane = __ldg(w.book + (lane & ((1 << B) - 1)));
  __syncthreads();

  const int64_t row0 = (int64_t(blockIdx.x) * kWarps + warp) * 16;
  float acc[TT][2];
#pragma unroll
  for (int t = 0; t < TT; ++t) acc[t][0] = acc[t][1] = 0.f;
  if (row0 < w.rows) {  // warp-uniform
    const int64_t ra = min(row0 + g, w.rows - 1), rb = min(row0 + g + 8, w.rows - 1);
    uint32_t a[KS][4];
    load_b_fragments<KS>(w, ra, rb, t4, a);
    const int nch = ncols / kChunkValues;
    const int64_t cbase = int64_t(slab) * kSlabChunks * 4 * B;
    const uint8_t* ca = w.codes + ra * p.row_bytes + cbase;
    const uint8_t* cb = w.codes + rb * p.row_bytes + cbase;
    // All of the slab's codes first, so their loads are in flight together.
    uint32_t wa[kSlabChunks], wb[kSlabChunks];
#pragma unroll
    for (int ch = 0; ch < kSlabChunks; ++ch) {
      wa[ch] = ch < nch ? lane_codes<B>(ca + ch * 4 * B, t4) : 0u;
      wb[ch] = ch < nch ? lane_codes<B>(cb + ch * 4 * B, t4) : 0u;
    }
#pragma unroll
    for (int ch = 0; ch < kSlabChunks; ++ch) {
      if (ch < nch) {
        float c[4][4];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
          const uint16_t* bp = At + (ch * kChunkValues + nt * 8 + g) * LD + 2 * t4;
#pragma unroll
          for (int ks = 0; ks < KS; ++ks)
            mma_f16(c[nt], a[ks], *reinterpret_cast<const uint32_t*>(bp + ks * 16),
                    *reinterpret_cast<const uint32_t*>(bp + ks * 16 + 8));
        }
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float va =
                __shfl_sync(0xffffffffu, book_lane, int(code_at<B>(wa[ch], nt, e))) * c[nt][e];
            const float vb =
                __shfl_sync(0xffffffffu, book_lane, int(code_at<B>(wb[ch], nt, e))) * c[nt][2 + e];
            const int j = ch * kChunkValues + nt * 8 + 2 * t4 + e;
#pragma unroll
            for (int t = 0; t < TT; ++t) {
              acc[t][0] = fmaf(va, xs[t][j], acc[t][0]);
              acc[t][1] = fmaf(vb, xs[t][j], acc[t][1]);
            }
          }
      }
    }
#pragma unroll
    for (int t = 0; t < TT; ++t)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float v = acc[t][h];
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        const int64_t r = row0 + g + 8 * h;
        if (t4 == 0 && t < p.T && r < w.rows)
          p.part[(int64_t(slab) * p.T + t) * w.rows + r] = v;
      }
  }
  // The last slab of this row block to finish sums the partials in slab order.
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(p.done + blockIdx.x, 1u) == unsigned(p.nslabs - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int64_t rbeg = int64_t(blockIdx.x) * kRowsPerCta;
  for (int i = tid; i < kRowsPerCta * p.T; i += kThreads) {
    const int t = i / kRowsPerCta;
    const int64_t r = rbeg + i % kRowsPerCta;
    if (r >= w.rows) continue;
    float s = 0.f;
    for (int sl = 0; sl < p.nslabs; ++sl) s += __ldcg(p.part + (int64_t(sl) * p.T + t) * w.rows + r);
    float& dst = p.y[int64_t(t) * w.rows + r];
    dst = p.accumulate ? dst + s : s;
  }
  if (tid == 0) p.done[blockIdx.x] = 0u;
}

// Prefill's dequantization to BF16 (the default; exact_kernels() keeps the F32 slabs): the
// decode kernel's tiles of S (tensor-core products B_I A_J with K = r, exact in F32) times the
// codebook value, rounded once to BF16 and written for cuBLAS's BF16 GEMM. One CTA per 128 rows
// x 256 columns of the row slab [row_begin, row_begin + nrows).
template <int B, int KS>
__global__ void __launch_bounds__(kThreads) lords_dequant_bf16_kernel(const LordsView w,
                                                                     int64_t row_bytes,
                                                                     int64_t row_begin,
                                                                     int64_t nrows,
                                                                     uint16_t* __restrict__ out) {
  constexpr int KP = 16 * KS, LD = KP + 8;
  __shared__ __align__(16) uint16_t At[kSlabCols * LD];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int slab = blockIdx.y;
  const int64_t j_base = int64_t(slab) * kSlabCols;
  const int ncols = int(w.cols - j_base < kSlabCols ? w.cols - j_base : kSlabCols);
  stage_a_transposed<KP, LD>(w, j_base, ncols, tid, At);
  const float book_lane = __ldg(w.book + (lane & ((1 << B) - 1)));
  __syncthreads();
  const int64_t lrow0 = (int64_t(blockIdx.x) * kWarps + warp) * 16;
  if (lrow0 >= nrows) return;  // warp-uniform; no barrier follows
  const int64_t la = lrow0 + g, lb = lrow0 + g + 8;
  const int64_t ra = row_begin + min(la, nrows - 1), rb = row_begin + min(lb, nrows - 1);
  uint32_t a[KS][4];
  load_b_fragments<KS>(w, ra, rb, t4, a);
  const int nch = ncols / kChunkValues;
  const int64_t cbase = int64_t(slab) * kSlabChunks * 4 * B;
  const uint8_t* ca = w.codes + ra * row_bytes + cbase;
  const uint8_t* cb = w.codes + rb * row_bytes + cbase;
  uint32_t* oa = reinterpret_cast<uint32_t*>(out + la * w.cols + j_base);
  uint32_t* ob = reinterpret_cast<uint32_t*>(out + lb * w.cols + j_base);
  const bool sa = la < nrows, sb = lb < nrows;
  for (int ch = 0; ch < nch; ++ch) {
    const uint32_t wa = lane_codes<B>(ca + ch * 4 * B, t4), wb = lane_codes<B>(cb + ch * 4 * B, t4);
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      float c[4] = {0.f, 0.f, 0.f, 0.f};
      const uint16_t* bp = At + (ch * kChunkValues + nt * 8 + g) * LD + 2 * t4;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
        mma_f16(c, a[ks], *reinterpret_cast<const uint32_t*>(bp + ks * 16),
                *reinterpret_cast<const uint32_t*>(bp + ks * 16 + 8));
      float v[4];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        v[e] = __shfl_sync(0xffffffffu, book_lane, int(code_at<B>(wa, nt, e))) * c[e];
        v[2 + e] = __shfl_sync(0xffffffffu, book_lane, int(code_at<B>(wb, nt, e))) * c[2 + e];
      }
      const int jw = (ch * kChunkValues + nt * 8 + 2 * t4) / 2;
      if (sa) oa[jw] = __bfloat16_as_ushort(__float2bfloat16_rn(v[0])) |
                       uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(v[1]))) << 16;
      if (sb) ob[jw] = __bfloat16_as_ushort(__float2bfloat16_rn(v[2])) |
                       uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(v[3]))) << 16;
    }
  }
}

// Per-row-block completion counters, zero between launches (the last CTA resets its own);
// grown on demand, kept for the process. One stream, so launches never share them at once.
unsigned* done_counters(int64_t n) {
  static DeviceScratch* buf = nullptr;
  static int64_t cap = 0;
  if (n > cap) {
    delete buf;  // stream-ordered: earlier launches finish with it first
    cap = std::max<int64_t>(n, 1024);
    buf = new DeviceScratch(size_t(cap) * sizeof(unsigned));
    LRQ_CUDA_CHECK(cudaMemsetAsync(buf->as<unsigned>(), 0, size_t(cap) * sizeof(unsigned), stream()));
  }
  return buf->as<unsigned>();
}

template <int B, int KS, int TT>
void launch_gemv(const GemvParams& p, dim3 grid) {
  lords_gemv_kernel<B, KS, TT><<<grid, kThreads, 0, stream()>>>(p);
  LRQ_CUDA_LAUNCHED();
}

template <int B, int KS>
void gemv_tokens(const GemvParams& p, dim3 grid) {
  if (p.T == 1) launch_gemv<B, KS, 1>(p, grid);
  else if (p.T == 2) launch_gemv<B, KS, 2>(p, grid);
  else if (p.T <= 4) launch_gemv<B, KS, 4>(p, grid);
  else launch_gemv<B, KS, 8>(p, grid);
}

template <int B>
void gemv_rank(const GemvParams& p, dim3 grid) {
  if (p.w.rank <= 16) gemv_tokens<B, 1>(p, grid);
  else if (p.w.rank <= 32) gemv_tokens<B, 2>(p, grid);
  else gemv_tokens<B, 4>(p, grid);
}

template <int B>
void dequant_bf16_rank(const LordsView& w, int64_t row_bytes, int64_t r0, int64_t n,
                       uint16_t* out) {
  const dim3 grid(unsigned((n + kRowsPerCta - 1) / kRowsPerCta),
                  unsigned((w.cols + kSlabCols - 1) / kSlabCols));
  auto go = [&](auto kernel) {
    kernel<<<grid, kThreads, 0, stream()>>>(w, row_bytes, r0, n, out);
    LRQ_CUDA_LAUNCHED();
  };
  if (w.rank <= 16) go(lords_dequant_bf16_kernel<B, 1>);
  else if (w.rank <= 32) go(lords_dequant_bf16_kernel<B, 2>);
  else go(lords_dequant_bf16_kernel<B, 4>);
}

// Prefill through BF16: x rounded once, the weights dequantized to BF16 a row slab at a time,
// one cuBLAS GEMM per slab. Slabs hold up to 2^26 weights (128 MiB), so a 7B projection is one
// GEMM: cut into 2^24-weight slabs, the 4096 x 11008 product (1524-row slabs) took 3.4x the
// whole GEMM's time on the H100. Larger matrices are cut at multiples of 256 rows.
void lords_prefill_bf16(const LordsView& w, const float* x, float* y, int64_t T, bool accumulate) {
  const int64_t row_bytes = w.cols / kChunkValues * 4 * w.bits;
  constexpr int64_t kMaxSlab = int64_t(1) << 26;
  const int64_t slab = w.rows * w.cols <= kMaxSlab
                           ? w.rows
                           : std::max<int64_t>(kMaxSlab / w.cols / 256 * 256, std::min<int64_t>(w.rows, 256));
  DeviceScratch xs(size_t(T * w.cols) * sizeof(uint16_t));
  DeviceScratch w16(size_t(slab * w.cols) * sizeof(uint16_t));
  to_bf16(x, xs.as<uint16_t>(), T * w.cols);
  for (int64_t r0 = 0; r0 < w.rows; r0 += slab) {
    const int64_t n = std::min(slab, w.rows - r0);
    switch (w.bits) {
      case 2: dequant_bf16_rank<2>(w, row_bytes, r0, n, w16.as<uint16_t>()); break;
      case 3: dequant_bf16_rank<3>(w, row_bytes, r0, n, w16.as<uint16_t>()); break;
      default: dequant_bf16_rank<4>(w, row_bytes, r0, n, w16.as<uint16_t>()); break;
    }
    gemm_bf16(true, false, n, T, w.cols, w16.as<uint16_t>(), w.cols, xs.as<uint16_t>(), w.cols,
              accumulate ? 1.0f : 0.0f, y + r0, w.rows);
  }
}

void lords_gemv(const LordsView& w, const float* x, float* y, int64_t T, bool accumulate) {
  GemvParams p{};
  p.w = w;
  p.x = x;
  p.y = y;
  p.T = int(T);
  p.accumulate = accumulate;
  p.row_bytes = w.cols / kChunkValues * 4 * w.bits;
  p.nslabs = int((w.cols + kSlabCols - 1) / kSlabCols);
  const int64_t row_blocks = (w.rows + kRowsPerCta - 1) / kRowsPerCta;
  if (row_blocks > INT_MAX || p.nslabs > 65535)
    bad_args("lords_matmul", "matrix too large for the decode kernel's grid");
  DeviceScratch part(size_t(p.nslabs) * size_t(T) * size_t(w.rows) * sizeof(float));
  p.part = part.as<float>();
  p.done = done_counters(row_blocks);
  const dim3 grid(unsigned(row_blocks), unsigned(p.nslabs));
  switch (w.bits) {
    case 2: gemv_rank<2>(p, grid); break;
    case 3: gemv_rank<3>(p, grid); break;
    default: gemv_rank<4>(p, grid); break;
  }
}

// ------------------------------------------------------------------ refinement passes
// One CTA per row: codes, D and G elementwise, the row's loss reduced in a fixed tree.
__global__ void lords_assign_kernel(const float* __restrict__ W, const float* __restrict__ S,
                                    const float* __restrict__ book, int K,
                                    const float* __restrict__ h, int64_t n, uint8_t* codes,
                                    float* D, float* G, double* row_loss) {
  extern __shared__ float mid[];  // K - 1 midpoints
  __shared__ double red[256];
  for (int k = threadIdx.x; k + 1 < K; k += blockDim.x) mid[k] = 0.5f * (book[k] + book[k + 1]);
  __syncthreads();
  uint8_t zero = 0;
  for (int k = 0; k + 1 < K; ++k) zero += uint8_t(mid[k] < 0.f);
  const int64_t i = blockIdx.x;
  double l = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const int64_t e = i * n + j;
    const float wv = W[e], sv = S[e];
    uint8_t c = zero;
    if (!(fabsf(sv) < 1e-30f)) {
      const float t = __fdiv_rn(wv, sv);
      c = 0;
      for (int k = 0; k + 1 < K; ++k) c += uint8_t(mid[k] < t);
    }
    const float q = book[c];
    // Explicit roundings: the same operations, in the same order, as the CPU (no contraction).
    const float r = __fsub_rn(wv, __fmul_rn(q, sv));
    const float hj = h ? h[j] : 1.f;
    if (codes) codes[e] = c;
    if (D) D[e] = r;
    if (G) G[e] = __fmul_rn(__fmul_rn(__fmul_rn(-2.f, hj), r), q);
    l += double(hj) * double(r) * double(r);
  }
  red[threadIdx.x] = l;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) row_loss[i] = red[0];
}

// The row losses summed by one CTA in a fixed pattern: the same total on every launch.
__global__ void sum_fixed_kernel(const double* v, int64_t n, double* out) {
  __shared__ double red[256];
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += v[i];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (int(threadIdx.x) < k) red[threadIdx.x] += red[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = red[0];
}

__global__ void scale_by_codebook_kernel(float* g, const uint8_t* c, const float* book, int64_t K,
                                         float alpha, int64_t n, unsigned long long* bad) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const uint8_t ce = c[e];
    if (ce >= K) {
      atomicMin(bad, (static_cast<unsigned long long>(e) << 8) | ce);
      continue;
    }
    g[e] = __fmul_rn(g[e], __fmul_rn(alpha, book[ce]));
  }
}

__global__ void adam_kernel(float* p, const float* g, float* m, float* v, int64_t n, float b1,
                            float b2, float eps, float c1, float c2, float lr) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const float gv = g[e];
    const float mv = b1 * m[e] + (1.f - b1) * gv;
    const float vv = b2 * v[e] + (1.f - b2) * gv * gv;
    m[e] = mv;
    v[e] = vv;
    p[e] -= lr * (mv * c1) / (sqrtf(vv * c2) + eps);
  }
}

LordsView view_of(const Lords& w) {
  LordsView v;
  v.codes = w.codes.data<uint8_t>();
  v.B = w.B.data<uint16_t>();
  v.A = w.A.data<uint16_t>();
  v.book = w.codebook.data<float>();
  v.rows = w.rows();
  v.cols = w.cols();
  v.rank = w.rank();
  v.bits = w.bits;
  if (reinterpret_cast<uintptr_t>(v.codes) % 8 != 0)
    bad_args("lords", "codes on the GPU must be 8-byte aligned");
  if (reinterpret_cast<uintptr_t>(v.A) % 16 != 0)
    bad_args("lords", "A on the GPU must be 16-byte aligned");
  return v;
}


}  // namespace

// ------------------------------------------------------------------ the seam's LoRDS ops
void lords_dequantize(const Lords& w, const Tensor& out) {
  if (w.rows() == 0) return;
  dequant_rows(view_of(w), 0, w.rows(), out.data<float>());
}

void lords_matmul(const Lords& w, const Tensor& x, const Tensor& y, bool accumulate) {
  const int64_t T = x.dim(0);
  if (T == 0 || w.rows() == 0) return;
  const LordsView v = view_of(w);
  if (T <= kGemvMaxT && v.bits <= 4 && v.rank <= kGemvMaxRank) {
    lords_gemv(v, x.data<float>(), y.data<float>(), T, accumulate);
    return;
  }
  if (v.bits <= 4 && v.rank <= kGemvMaxRank && !exact_kernels()) {
    lords_prefill_bf16(v, x.data<float>(), y.data<float>(), T, accumulate);
    return;
  }
  const Tensor xa = aligned16(x) ? x : x.clone();
  slab_gemm(v.rows, v.cols, xa.data<float>(), y.data<float>(), T, accumulate,
            [&](int64_t r0, int64_t n, float* out) { dequant_rows(v, r0, n, out); });
}

double lords_assign(const Tensor& W, const Tensor& S, const Tensor& codebook, const Tensor& h,
                    const Tensor& codes, const Tensor& D, const Tensor& G) {
  const int64_t m = W.dim(0), n = W.dim(1);
  if (m == 0 || n == 0) return 0.0;
  const int K = int(codebook.numel());
  DeviceScratch rows(size_t(m) * sizeof(double)), total(sizeof(double));
  lords_assign_kernel<<<unsigned(m), 256, size_t(std::max(K - 1, 1)) * sizeof(float), stream()>>>(
      W.data<float>(), S.data<float>(), codebook.data<float>(), K,
      h.defined() ? h.data<float>() : nullptr, n, codes.defined() ? codes.data<uint8_t>() : nullptr,
      D.defined() ? D.data<float>() : nullptr, G.defined() ? G.data<float>() : nullptr,
      rows.as<double>());
  LRQ_CUDA_LAUNCHED();
  sum_fixed_kernel<<<1, 256, 0, stream()>>>(rows.as<double>(), m, total.as<double>());
  LRQ_CUDA_LAUNCHED();
  double loss = 0;
  LRQ_CUDA_CHECK(cudaMemcpyAsync(&loss, total.as<double>(), sizeof loss, cudaMemcpyDeviceToHost,
                                 stream()));
  LRQ_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return loss;
}

void scale_by_codebook(const Tensor& G, const Tensor& codes, const Tensor& codebook,
                       double alpha) {
  const int64_t n = G.numel();
  if (n == 0) return;
  FirstReport bad;
  scale_by_codebook_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(
      G.data<float>(), codes.data<uint8_t>(), codebook.data<float>(), codebook.numel(),
      float(alpha), n, bad.ptr());
  LRQ_CUDA_LAUNCHED();
  unsigned long long v = 0;
  if (bad.read(&v))
    fail_msg("", "scale_by_codebook: code " + std::to_string(int(v & 0xFFu)) + " at " +
                     std::to_string(int64_t(v >> 8)) + " is outside the codebook of " +
                     std::to_string(codebook.numel()));
}

void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
               const AdamParams& a) {
  const int64_t n = p.numel();
  if (n == 0) return;
  const float c1 = float(1.0 / (1.0 - std::pow(a.beta1, double(a.step))));
  const float c2 = float(1.0 / (1.0 - std::pow(a.beta2, double(a.step))));
  adam_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(
      p.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(), n, float(a.beta1),
      float(a.beta2), float(a.eps), c1, c2, float(a.lr));
  LRQ_CUDA_LAUNCHED();
}

}  // namespace lrq::cuda
