// Decode GEMV on the tensor cores (T <= 2 tokens; packed_cuda.cu's CUDA-core kernel does the
// rest). Why: that kernel spends ~10 instructions per weight (decode, int->float, FMA, per-group
// bookkeeping) and so stays instruction-bound at 25-55% of the memory bandwidth. Here a warp
// multiplies a 16-row tile of the weight by x with mma.m16n8k16 (BF16 in, F32 accumulate), and a
// weight costs about one and a half instructions: a LOP3 that puts two codes under the exponent
// of 128 (bf16 128 + c 2^k, exact), one BF16 FMA per two codes that removes 128 and 2^k
// (exact: the result is the small integer c), and 1/16 of an MMA.
//
// Precision: x is split into three BF16 parts (hi + mid + lo == x exactly for normal floats:
// 3 x 8 significant bits), which fill three of the eight MMA columns. Codes are exact in BF16,
// so every product is exact and only the F32 accumulation rounds: results match the F32 CUDA-core
// kernel and the CPU to ~1e-6 (runtime_gpu_test holds both to the same 1e-5 budget). Two tokens
// use six columns.
//
// Layout: no repacking. A quad of lanes (t = lane & 3) owns four consecutive 32-value chunks of
// rows g and g + 8 (g = lane >> 2), a 128-value "step"; the lane decodes its whole chunk into 16
// bf16x2 registers whose value pairs are fixed by the bit layout (pair_first below). The MMA's k
// order is free as long as A and B agree, so x's three parts are laid out once per CTA, at the
// start, in exactly that order in shared memory (6 bytes per value per token, with the sums of
// x per step for the offsets), and the CTA's scales per step next to them: the main loop reads
// four 16-byte fragments and the scales from shared memory and no global memory but the codes.
// Where x's parts do not fit in shared memory (cols x T above ~30 K values), packed_cuda.cu's
// kernel runs instead. Steps never straddle groups: group % 128 == 0.
//
// The kernel is latency-bound rather than instruction-bound (a CTA's life is a few steps per
// warp), so what sped it up was overlap: early launch behind the kernel before (weights are
// read before griddepcontrol.wait) and no global loads besides the codes in the loop. Where it
// stands: bench/RESULTS.md and bench/NOTES.md (H100, bench/decode_gpu.sh and
// bench/profile_decode_gpu.sh).
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/packed_cuda.h"
#include "backend/cuda/packed_mma_cuda.h"
#include "backend/cuda/widen.cuh"

namespace lrq::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kStep = 128;  // values per step: four chunks
constexpr int kMmas = 8;    // m16n8k16 per step (k = 16 each)

// set_packed_gemv_mma's choices; 0 = the default.
MmaUse g_use = MmaUse::Auto;
int g_tiles = 0;  // 16-row tiles per CTA
int g_depth = 0;  // steps in flight per warp
int64_t g_calls = 0;

// Register j (0..15) of a decoded chunk holds values (first, first + gap) of the chunk in its
// low and high halves. The pairs are the fields 16 bits apart in the layout's words (b = 2, 4)
// or 12 bits apart after a funnel shift (b = 3); see decode_reg.
template <int B>
__host__ __device__ constexpr int pair_first(int j) {
  if constexpr (B == 4) {
    return 4 * (j >> 2) + 16 * (j & 1) + ((j >> 1) & 1);
  } else if constexpr (B == 2) {
    return 8 * ((j & 7) % 4) + 4 * (j >> 3) + ((j & 7) >= 4 ? 1 : 0);
  } else {
    return 8 * (j & 3) + 2 * (j >> 2);
  }
}
template <int B>
constexpr int kPairGap = B == 3 ? 1 : 2;

__host__ __device__ constexpr uint32_t bf16_pow2(int e) { return uint32_t(127 + e) << 7; }

__device__ __forceinline__ uint32_t fma_bf16x2(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// Masked code bits at bit KLO (low half) and 16 + KHI (high half), inside the 7 mantissa bits
// -> the two codes as exact bf16: (128 + c 2^k) * 2^-k - 128 * 2^-k.
template <int KLO, int KHI>
__device__ __forceinline__ uint32_t codes_to_bf16x2(uint32_t masked) {
  constexpr uint32_t mul = bf16_pow2(-KLO) | bf16_pow2(-KHI) << 16;
  constexpr uint32_t add = (0x8000u | bf16_pow2(7 - KLO)) | (0x8000u | bf16_pow2(7 - KHI)) << 16;
  return fma_bf16x2(masked | 0x43004300u, mul, add);
}

// Register J of a chunk whose words are w[0..] (w[3] = 0 at b = 3). J is a constant after
// unrolling, so every branch below folds away.
template <int B, int J>
__device__ __forceinline__ uint32_t decode_reg(const uint32_t (&w)[4]) {
  if constexpr (B == 4) {
    // Word q: byte 4q+u holds values 4q+u (low nibble) and 4q+u+16 (high nibble). A high
    // nibble moves down one bit: at bits 4-7 its top bit would land in the exponent.
    constexpr int q = J >> 2, hi = J & 1, shift = 8 * ((J >> 1) & 1) + hi;
    return codes_to_bf16x2<3 * hi, 3 * hi>((w[q] >> shift) & (0x000F000Fu << (3 * hi)));
  } else if constexpr (B == 2) {
    // Word q: byte 4q+u holds value 8p+4q+u at bits 2p.
    constexpr int q = J >> 3, e = J & 7;
    constexpr int shift = e < 3 ? 0 : e < 6 ? 6 : 12;
    constexpr int pos = (e % 3) * 2;
    return codes_to_bf16x2<pos, pos>((w[q] >> shift) & (0x00030003u << pos));
  } else {
    // Field i (value 8(i%4) + i/4) sits at bit 3i of the 96-bit chunk; fields i and i+4 are 12
    // bits apart, so one window puts them at bits 4 and 16.
    constexpr int i = 8 * (J >> 2) + (J & 3), s = 3 * i - 4;
    uint32_t win;
    if constexpr (s < 0) {
      win = w[0] << (-s);
    } else {
      win = __funnelshift_r(w[s >> 5], w[(s >> 5) + 1], s & 31);
    }
    return codes_to_bf16x2<4, 0>(win & 0x00070070u);
  }
}

// MMA M of a step: registers 2M and 2M + 1 of rows g and g + 8 against x's fragment b.
template <int B, int R, int M>
__device__ __forceinline__ void mma_step(float (&d)[R][4], const uint32_t (&cur)[R][2][4],
                                         const uint4 (&bq)[4]) {
  const uint32_t b0 = M & 1 ? bq[M / 2].z : bq[M / 2].x, b1 = M & 1 ? bq[M / 2].w : bq[M / 2].y;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const uint32_t a[4] = {decode_reg<B, 2 * M>(cur[r][0]), decode_reg<B, 2 * M>(cur[r][1]),
                           decode_reg<B, 2 * M + 1>(cur[r][0]), decode_reg<B, 2 * M + 1>(cur[r][1])};
    mma_bf16(d[r], a, b0, b1);
  }
}
template <int B, int R, int... M>
__device__ __forceinline__ void mma_step_all(float (&d)[R][4], const uint32_t (&cur)[R][2][4],
                                             const uint4 (&bq)[4],
                                             std::integer_sequence<int, M...>) {
  (mma_step<B, R, M>(d, cur, bq), ...);
}

// A lane's slot for one chunk of codes in the ring: 8 bytes at 2 bits, so the ring costs half
// the shared memory there and deeper prefetch still fits; 16 at 3 bits (12 used: three 4-byte
// reads instead of one would cost more than the padding) and 4.
constexpr size_t slot_bytes(int B) { return B == 2 ? 8 : 16; }
template <int B>
using Slot = std::conditional_t<slot_bytes(B) == 8, uint2, uint4>;

// One lane's chunk of codes -> its slot in shared memory, asynchronously. Codes are read once:
// the 16-byte copies bypass L1; the 3-bit chunk (12 bytes, 4-byte aligned) goes as three words.
template <int B>
__device__ __forceinline__ void copy_codes(Slot<B>* slot, const uint8_t* src) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(slot));
  if constexpr (B == 4) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
  } else if constexpr (B == 2) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(dst), "l"(src) : "memory");
  } else {
#pragma unroll
    for (int k = 0; k < 3; ++k)
      asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst + 4 * k), "l"(src + 4 * k)
                   : "memory");
  }
}
template <int B>
__device__ __forceinline__ void read_codes(const Slot<B>* slot, uint32_t (&w)[4]) {
  if constexpr (B == 2) {
    const uint2 v = *slot;
    w[0] = v.x;
    w[1] = v.y;
    w[2] = w[3] = 0;
  } else {
    const uint4 v = *slot;
    w[0] = v.x;
    w[1] = v.y;
    w[2] = v.z;
    w[3] = B == 3 ? 0u : v.w;
  }
}

struct MmaParams {
  const uint8_t* codes;
  const uint16_t* scales;
  const uint16_t* offsets;
  const float* x;
  float* y;
  int64_t rows, row_bytes;
  int cols, nsteps, ngroups, steps_per_group, T;
  bool accumulate;
  int n_terms;  // with terms the kernel before computes h = R x: x may be read before pdl_wait
  GemvTerm terms[kPackedMaxTerms];
};

// Shared memory of one CTA: the code ring, x's fragments and its per-step sums.
constexpr size_t ring_bytes(int B, int R, int D) {
  return size_t(D + 1) * R * 2 * kThreads * slot_bytes(B);  // a multiple of 16
}
constexpr size_t frag_bytes(int TT, int nsteps) {
  return size_t(nsteps) * 4 * (3 * TT) * 4 * sizeof(uint4) + size_t(nsteps) * TT * sizeof(float);
}
constexpr size_t scale_bytes(int R, int nsteps) { return size_t(nsteps) * 16 * R * sizeof(uint32_t); }
constexpr size_t dynamic_smem(int B, int R, int D, int TT, int nsteps) {
  return ring_bytes(B, R, D) + frag_bytes(TT, nsteps) + scale_bytes(R, nsteps);
}

// A CTA of 8 warps owns R 16-row tiles. First every warp lays out x's parts for steps w,
// w + 8, ... (one warp per step: lane (tq, M) writes MMA M's fragment of chunk tq for each of
// the 3 TT columns, and the warp sums the step's x), while the first D steps of codes are in
// flight. Then warp w takes steps w, w + 8, ... of every tile: four fragment loads and the
// step's sums, shared by the R tiles, and per tile the decode and 8 MMAs.
template <int B, int F, int TT, int R, int D>
__global__ void __launch_bounds__(kThreads) packed_gemv_mma_kernel(const MmaParams p) {
  constexpr int kCols = 3 * TT;  // MMA columns in use: three parts per token
  __shared__ float red[kWarps][16 * R][TT];
  extern __shared__ uint4 smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int nsteps = p.nsteps;
  const int64_t row0 = int64_t(blockIdx.x) * 16 * R;
  // Codes stream through a ring of D + 1 per-lane slots filled by cp.async, so D steps per warp
  // are in flight without holding registers (a register ring of the same depth cost occupancy:
  // bench/NOTES.md). Each lane reads back only what it copied itself, so waiting on its own copy
  // groups is enough.
  Slot<B>* ring = reinterpret_cast<Slot<B>*>(smem);  // [D + 1][R][2][kThreads]
  uint4* frag = smem + ring_bytes(B, R, D) / sizeof(uint4);  // [nsteps][4 MMA pairs][kCols][4 t]
  float* sxs = reinterpret_cast<float*>(frag + nsteps * 4 * kCols * 4);  // [nsteps][TT]
  // Per step, the scale and offset of each CTA row as fp16 | fp16 << 16, [nsteps][g][R][h]:
  // staged once, so the loop reads them from shared memory without a division for the group.
  uint32_t* scl = reinterpret_cast<uint32_t*>(sxs + nsteps * TT);
  constexpr int kChunkBytes = 4 * B, kStepBytes = 4 * kChunkBytes;
  // Codes of (tile r, half h) at cbase + roff[r][h], cbase advancing one warp step per issue.
  // Tail rows past the last are not stored: they read the last row.
  const int64_t first = min(row0 + g, p.rows - 1);
  const uint8_t* cbase =
      p.codes + first * p.row_bytes + t * kChunkBytes + warp * kStepBytes;
  uint32_t roff[R][2];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      roff[r][h] = uint32_t((min(row0 + 16 * r + 8 * h + g, p.rows - 1) - first) * p.row_bytes);
  auto slot_ptr = [&](int slot, int r, int h) {
    return ring + ((slot * R + r) * 2 + h) * kThreads + threadIdx.x;
  };
  auto issue_step = [&](int slot) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int h = 0; h < 2; ++h) copy_codes<B>(slot_ptr(slot, r, h), cbase + roff[r][h]);
    cbase += kWarps * kStepBytes;
  };
  // Programmatic dependent launch: the weights are read-only while products run (GPU weights
  // are written by the encode path, which synchronizes the stream before returning), so the
  // first steps' codes and the scales are read before waiting for the kernel before this one;
  // and the next kernel may start its own weight reads as this one's CTAs retire.
  pdl_release_dependents();
#pragma unroll
  for (int k = 0; k < D; ++k) {
    if (warp + kWarps * k < nsteps) issue_step(k);
    cp_async_commit();
  }
  // A warp per row, consecutive lanes reading consecutive groups (no division by a runtime
  // count in the loop: g128, the common case, has one step per group).
  for (int rr = warp; rr < 16 * R; rr += kWarps) {
    const int64_t rbase = min(row0 + rr, p.rows - 1) * p.ngroups;
    uint32_t* dst = scl + ((rr & 7) * R + (rr >> 4)) * 2 + ((rr >> 3) & 1);
    for (int st = lane; st < nsteps; st += 32) {
      const int64_t idx = rbase + (p.steps_per_group == 1 ? st : st / p.steps_per_group);
      dst[st * 8 * R * 2] = uint32_t(__ldg(p.scales + idx)) |
                            (F == 0 ? uint32_t(__ldg(p.offsets + idx)) << 16 : 0u);
    }
  }
  if (p.n_terms == 0) pdl_wait();

  {  // x's three parts (hi + mid + lo == x exactly) in fragment order, and its sums
    const int M = lane & 7, tq = lane >> 3;
    const int o0 = 32 * tq + pair_first<B>(2 * M), o1 = 32 * tq + pair_first<B>(2 * M + 1);
    // The loads of kPrepSteps steps first: one L2 round trip for several steps.
    constexpr int kPrepSteps = 4;
    for (int st0 = warp; st0 < nsteps; st0 += kWarps * kPrepSteps) {
      float v[kPrepSteps][TT][4];
#pragma unroll
      for (int b = 0; b < kPrepSteps; ++b) {
        const int st = min(st0 + kWarps * b, nsteps - 1);
#pragma unroll
        for (int tok = 0; tok < TT; ++tok) {
          const float* xs = p.x + (int64_t(tok) * p.cols + st * kStep);
          v[b][tok][0] = __ldg(xs + o0);
          v[b][tok][1] = __ldg(xs + o0 + kPairGap<B>);
          v[b][tok][2] = __ldg(xs + o1);
          v[b][tok][3] = __ldg(xs + o1 + kPairGap<B>);
        }
      }
#pragma unroll
      for (int b = 0; b < kPrepSteps; ++b) {
        const int st = st0 + kWarps * b;
        if (st >= nsteps) break;
#pragma unroll
        for (int tok = 0; tok < TT; ++tok) {
          float* u = v[b][tok];
          float sum = (u[0] + u[1]) + (u[2] + u[3]);
          uint2* dst =
              reinterpret_cast<uint2*>(frag + ((st * 4 + M / 2) * kCols + 3 * tok) * 4 + tq) +
              (M & 1);
#pragma unroll
          for (int part = 0; part < 3; ++part) {
            const uint32_t lo = pack_bf16x2(u[0], u[1]), hi = pack_bf16x2(u[2], u[3]);
            dst[part * 8] = make_uint2(lo, hi);  // column 3 tok + part: 4 uint4 = 8 uint2 on
            u[0] -= __uint_as_float(lo << 16);  // exact
            u[1] -= __uint_as_float(lo & 0xFFFF0000u);
            u[2] -= __uint_as_float(hi << 16);
            u[3] -= __uint_as_float(hi & 0xFFFF0000u);
          }
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
          if (lane == 0) sxs[st * TT + tok] = sum;
        }
      }
    }
  }
  __syncthreads();

  // Accumulator columns 2t and 2t+1 belong to token (column / 3); the offset term of a token is
  // added once, by the lane holding its first column.
  float wcol[2][TT], wsx[TT];
#pragma unroll
  for (int tok = 0; tok < TT; ++tok) {
    wcol[0][tok] = (2 * t) / 3 == tok ? 1.f : 0.f;
    wcol[1][tok] = (2 * t + 1) / 3 == tok ? 1.f : 0.f;
    wsx[tok] = (3 * tok) / 2 == t ? 1.f : 0.f;
  }
  // Lanes of the unused MMA columns read a used one: their accumulator columns get weight 0.
  const uint4* my_frag = frag + (g % kCols) * 4 + t;
  const float centre = float(1 << (B - 1));

  float acc[R][2][TT];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int tok = 0; tok < TT; ++tok) acc[r][h][tok] = 0.f;

  for (int base = warp; base < nsteps; base += kWarps * (D + 1)) {
#pragma unroll
    for (int u = 0; u <= D; ++u) {
      const int s = base + kWarps * u;
      if (s >= nsteps) break;
      cp_async_wait<D - 1>();  // this step's group (the oldest of D) has landed
      uint32_t cur[R][2][4];
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) read_codes<B>(slot_ptr(u, r, h), cur[r][h]);
      if (s + kWarps * D < nsteps) issue_step((u + D) % (D + 1));
      cp_async_commit();  // possibly empty: keeps one group per step
      uint4 bq[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) bq[q] = my_frag[(s * 4 + q) * kCols * 4];
      float sxv[TT];
#pragma unroll
      for (int tok = 0; tok < TT; ++tok) sxv[tok] = wsx[tok] * sxs[s * TT + tok];
      float sc[R][2], of[R][2];
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint32_t so = scl[((s * 8 + g) * R + r) * 2 + h];
          sc[r][h] = f16_bits_to_f32(uint16_t(so & 0xFFFFu));
          of[r][h] = F == 0 ? f16_bits_to_f32(uint16_t(so >> 16)) : -centre * sc[r][h];
        }
      float d[R][4];
#pragma unroll
      for (int r = 0; r < R; ++r) d[r][0] = d[r][1] = d[r][2] = d[r][3] = 0.f;
      mma_step_all<B, R>(d, cur, bq, std::make_integer_sequence<int, kMmas>{});
#pragma unroll
      for (int tok = 0; tok < TT; ++tok)
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float dot = d[r][2 * h] * wcol[0][tok] + d[r][2 * h + 1] * wcol[1][tok];
            acc[r][h][tok] = fmaf(sc[r][h], dot, fmaf(of[r][h], sxv[tok], acc[r][h][tok]));
          }
    }
  }

  // The quad's four lanes hold a row's columns: add them, then across the warps.
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int tok = 0; tok < TT; ++tok) {
        float v = acc[r][h][tok];
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        if (t == 0) red[warp][16 * r + 8 * h + g][tok] = v;
      }
  if (p.n_terms > 0) {
    pdl_wait();  // the h of the terms come from the kernel this one may overlap (h = R x)
    // Low-rank terms: warp w adds L[row, :] h for rows w, w + 8, ... into its own partials.
    __syncwarp();
    for (int rr = warp; rr < 16 * R; rr += kWarps) {
      const int64_t row = min(row0 + rr, p.rows - 1);
#pragma unroll
      for (int tok = 0; tok < TT; ++tok) {
        float v = 0.f;
        for (int k = 0; k < p.n_terms; ++k) {
          const GemvTerm& tm = p.terms[k];
          for (int64_t j = lane; j < tm.rank; j += 32) {
            const int64_t li = row * tm.rank + j;
            const float l = tm.L_f16 ? f16_bits_to_f32(static_cast<const uint16_t*>(tm.L)[li])
                                     : static_cast<const float*>(tm.L)[li];
            v = fmaf(l, tm.h[tok * tm.rank + j], v);
          }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == 0) red[warp][rr][tok] += v;
      }
    }
  }
  __syncthreads();
  store_row_sums(red, p.y, p.rows, row0, p.T, p.accumulate);
}

// Tiles per CTA and steps in flight for a weight, unless set_packed_gemv_mma fixed them. Two
// or four tiles share each step's fragment loads and scale work; they pay once there are
// enough rows to keep the GPU full, four only where the decode is cheapest (one token at 2
// bits: 11008x4096 12.1 against 13.3 us; w3 18.1 against 14.7, w4 13.7 against 12.4).
// bench_decode_gpu's "(mma N tiles)" rows (bench/results/gpu/decode_session10_h100_2026-11-23.md).
int default_tiles(int64_t rows, int bits, int T) {
  if (rows < 8192) return 1;
  return bits == 2 && T == 1 ? 4 : 2;
}
// Wide rows (11008 columns: 86 steps, 11 per warp) hide more latency with two steps in flight
// (4096x11008 w4: 14.8 against 16.3 us); 32 steps per row do better with one (11008x4096 w4:
// 12.5 against 16.1 us, the larger ring costing a CTA per SM). bench_decode_gpu's "(mma depth
// N)" rows.
int default_depth(int64_t cols) { return cols >= 8192 ? 2 : 1; }
// Early launch behind the kernel before pays on the 7B MLP shapes (45 M weights: 12.5 against
// 15.1 us at w4 11008x4096, bench_decode_gpu's "(no PDL)" rows) and cost at 4096x4096 (17 M:
// 11.2 against 8.3 us in an intermediate build that launched every shape early; bench/NOTES.md,
// session 7, call 6); with terms it always overlaps h = R x.
bool early_launch(const PackedView& w, int n_terms) {
  return n_terms > 0 || w.rows * w.cols >= (int64_t(32) << 20);
}

// How one product runs: the one place that decides, for packed_gemv_mma_takes (does it fit in
// shared memory) and the launch.
struct Plan {
  int tiles, depth;  // R, D
  int steps;
  unsigned grid;
};
Plan plan_for(const PackedView& w, int T) {
  Plan pl;
  pl.steps = int(w.cols / kStep);
  pl.depth = g_depth ? g_depth : default_depth(w.cols);
  pl.tiles = g_tiles ? g_tiles : default_tiles(w.rows, int(w.bits), T);
  pl.grid = unsigned((w.rows + 16 * pl.tiles - 1) / (16 * pl.tiles));
  return pl;
}

size_t smem_for(int B, const Plan& pl, int TT) {
  return dynamic_smem(B, pl.tiles, pl.depth, TT, pl.steps) +
         size_t(kWarps) * 16 * pl.tiles * TT * sizeof(float);  // + the static reduction array
}

// One product's arguments, passed down the dispatch below; with `query` set nothing is
// launched and the launch is described there instead.
struct Call {
  const float* x;
  float* y;
  int T;
  bool accumulate;
  const GemvTerm* terms;
  int n_terms;
  bool pdl;
  MmaLaunch* query;
};

template <int B, int F, int TT, int R, int D>
void run(const PackedView& w, const Plan& pl, const Call& c) {
  auto kernel = packed_gemv_mma_kernel<B, F, TT, R, D>;
  const size_t smem = dynamic_smem(B, R, D, TT, pl.steps);
  static const bool opted_in = (allow_all_smem(kernel), true);  // per instantiation
  (void)opted_in;
  if (c.query) {
    MmaLaunch& q = *c.query;
    q.tiles = R;
    q.depth = D;
    q.grid = pl.grid;
    q.smem = smem_for(B, pl, TT);
    LRQ_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&q.ctas_per_sm, kernel, kThreads,
                                                                 smem));
    return;
  }
  MmaParams p = {};
  p.codes = w.codes;
  p.scales = w.scales;
  p.offsets = w.offsets;
  p.x = c.x;
  p.y = c.y;
  p.rows = w.rows;
  p.row_bytes = w.cols / 32 * 4 * B;
  p.cols = int(w.cols);
  p.nsteps = int(w.cols / kStep);
  p.ngroups = int(w.cols / w.group);
  p.steps_per_group = int(w.group / kStep);
  p.T = c.T;
  p.accumulate = c.accumulate;
  p.n_terms = c.n_terms;
  for (int k = 0; k < c.n_terms; ++k) p.terms[k] = c.terms[k];
  // Overlaps the kernel before (see the kernel's pdl_wait): with terms that is the one
  // computing h, which only reads x.
  launch_kernel(kernel, pl.grid, kThreads, smem, c.pdl && early_launch(w, c.n_terms), p);
}

template <int B, int F, int TT, int R>
void run_depth(const PackedView& w, const Plan& pl, const Call& c) {
  switch (pl.depth) {
    case 1: return run<B, F, TT, R, 1>(w, pl, c);
    case 2: return run<B, F, TT, R, 2>(w, pl, c);
    default: return run<B, F, TT, R, 4>(w, pl, c);
  }
}

template <int B, int F, int TT>
void run_tiles(const PackedView& w, const Plan& pl, const Call& c) {
  switch (pl.tiles) {
    case 1: return run_depth<B, F, TT, 1>(w, pl, c);
    case 2: return run_depth<B, F, TT, 2>(w, pl, c);
    default: return run_depth<B, F, TT, 4>(w, pl, c);
  }
}

template <int B, int F>
void run_tokens(const PackedView& w, const Plan& pl, const Call& c) {
  if (c.T == 1) return run_tiles<B, F, 1>(w, pl, c);
  run_tiles<B, F, 2>(w, pl, c);
}

template <int B>
void run_format(const PackedView& w, const Plan& pl, const Call& c) {
  if (w.format == 0) return run_tokens<B, 0>(w, pl, c);
  run_tokens<B, 1>(w, pl, c);
}

void dispatch(const PackedView& w, const Call& c) {
  const Plan pl = plan_for(w, c.T);
  switch (w.bits) {
    case 2: return run_format<2>(w, pl, c);
    case 3: return run_format<3>(w, pl, c);
    default: return run_format<4>(w, pl, c);
  }
}

}  // namespace

bool packed_gemv_mma_takes(const PackedView& w, int64_t T, int n_terms) {
  const bool fits =
      T >= 1 && T <= 2 && (w.bits == 2 || w.bits == 3 || w.bits == 4) &&
      (w.format == 0 || w.format == 1) && w.cols % kStep == 0 && w.group % kStep == 0 &&
      reinterpret_cast<uintptr_t>(w.codes) % 16 == 0 &&
      smem_for(int(w.bits), plan_for(w, int(T)), int(T)) <= smem_optin_limit();
  // With a low-rank branch the CUDA-core kernel overlaps the h = R x kernel better (1-3 us less
  // at 2 and 4 bits: bench_decode_gpu's "(mma with +lr)" rows); at 3 bits its decode is slow
  // enough that this kernel wins anyway.
  switch (g_use) {
    case MmaUse::Off: return false;
    case MmaUse::Always: return fits;
    default: return fits && (n_terms == 0 || w.bits == 3);
  }
}

void packed_gemv_mma(const PackedView& w, const float* x, float* y, int64_t T, bool accumulate,
                     const GemvTerm* terms, int n_terms, bool pdl) {
  ++g_calls;
  dispatch(w, Call{x, y, int(T), accumulate, terms, n_terms, pdl, nullptr});
}

MmaLaunch packed_gemv_mma_launch(const PackedView& w, int64_t T, int n_terms) {
  MmaLaunch q;
  if (!packed_gemv_mma_takes(w, T, n_terms)) return q;
  dispatch(w, Call{nullptr, nullptr, int(T), false, nullptr, 0, false, &q});
  return q;
}

int64_t packed_gemv_mma_calls() { return g_calls; }

void set_packed_gemv_mma(const MmaConfig& c) {
  auto one_of = [](int v) { return v == 0 || v == 1 || v == 2 || v == 4; };
  if (!one_of(c.tiles) || !one_of(c.depth))
    bad_args("set_packed_gemv_mma", "tiles per CTA and steps in flight must be 1, 2 or 4 (0: default)");
  g_use = c.use;
  g_tiles = c.tiles;
  g_depth = c.depth;
}

}  // namespace lrq::cuda
