// Packed-weight kernels (declared in packed_cuda.h; layout in formats/packed_weight.h).
//
// Decode mapping. A chunk holds 32 values in 4*b bytes; four consecutive lanes (a quad) share
// one chunk and lane `sub` of the quad owns values 8*sub .. 8*sub+7. The layout puts those eight
// values in eight bytes it can read with one load (b = 8: bytes 8sub..; b = 4: the low or high
// nibbles of bytes 0-7 or 8-15; b = 2: bit pair `sub` of bytes 0-7; b = 3 reads the whole
// 12-byte chunk and takes bits 12j + 3sub), and the quad's x values are 32 consecutive floats,
// so a warp reads 8 chunks of codes and 1 KB of x contiguously. Codes become floats without an
// int->float conversion (a low-throughput instruction): the code byte is placed under the
// exponent of 2^23 and 2^23 subtracted, exactly.
//
// Each CTA (8 warps) owns R rows; its warps interleave over the chunks of those rows, so every
// x value a lane loads feeds R rows, and the codes of all R rows are loaded before any math.
// Per group the kernel uses, like the CPU, s * sum(c x) + o * sum(x) (symmetric: o = -2^(b-1) s;
// codebook: s * sum(book[c] x)). Partial sums meet in shared memory; the low-rank epilogue adds
// L[row, k] h[t, k] spread over the CTA's threads before that reduction.
#include <algorithm>
#include <cstdint>
#include <functional>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/packed_cuda.h"
#include "backend/cuda/packed_decode.cuh"
#include "backend/cuda/packed_mma_cuda.h"
#include "backend/cuda/widen.cuh"

namespace lrq::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int64_t kSlabElems = int64_t(1) << 22;  // F32 slab for the cuBLAS path: 16 MiB

bool g_pdl = true;
// Single-token variant: rows per CTA and unrolling of the chunk loop (set_packed_gemv_variant).
// 0 = per width: the fastest measured on the H100 (RESULTS.md variant table).
int g_rows1 = 0, g_unroll1 = 0;

struct GemvParams {
  const uint8_t* codes;
  const uint16_t* scales;
  const uint16_t* offsets;
  const float* codebook;
  const float* x;
  float* y;
  int64_t rows, row_bytes;
  int cols, nchunks, ngroups, T;
  // group of chunk c: c when one chunk per group, else umulhi(c, group_mul) (exact while
  // nchunks * chunks_per_group < 2^32, checked on the host).
  bool chunk_is_group;
  unsigned group_mul;
  bool accumulate;
  int n_terms;
  GemvTerm terms[kPackedMaxTerms];
};

template <int B, int F, int R, int TT, int U>
__global__ void __launch_bounds__(kThreads) packed_gemv_kernel(const GemvParams p) {
  constexpr bool LUT = F == 2;
  __shared__ float book[LUT ? (1 << B) : 1];
  __shared__ float red[kWarps][R][TT];
  if constexpr (LUT) {
    for (int i = threadIdx.x; i < (1 << B); i += kThreads) book[i] = p.codebook[i];
    __syncthreads();
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane & 3;
  const int64_t row0 = int64_t(blockIdx.x) * R;
  int64_t row[R];
  const uint8_t* crow[R];
  const uint16_t* srow[R];
  const uint16_t* orow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    row[r] = min(row0 + r, p.rows - 1);  // tail rows: computed, not stored
    crow[r] = p.codes + row[r] * p.row_bytes + lane_offset<B>(sub);
    srow[r] = p.scales + row[r] * p.ngroups;
    orow[r] = F == 0 ? p.offsets + row[r] * p.ngroups : srow[r];
  }
  float acc[R][TT];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < TT; ++t) acc[r][t] = 0.f;
  const float centre = float(1 << (B - 1));

  // Warp w, quad q takes chunks w*8 + q + 64*it. The trip count is the warp's largest, so the
  // loop body has no branch: a lane past the last chunk re-reads it and adds it with zero
  // scales, and rows t >= T of x repeat row T-1 (their sums are never stored).
  const int c0 = warp * 8 + (lane >> 2), last = p.nchunks - 1;
  const int niter =
      warp * 8 < p.nchunks ? (p.nchunks - warp * 8 + kWarps * 8 - 1) / (kWarps * 8) : 0;
#pragma unroll U
  for (int it = 0; it < niter; ++it) {
    const int c = c0 + it * kWarps * 8;
    const bool live = c <= last;
    const int cc = live ? c : last;
    const int g = p.chunk_is_group ? cc : int(__umulhi(unsigned(cc), p.group_mul));
    uint32_t w[R][3];
    uint16_t sh[R], oh[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      load_chunk<B>(crow[r] + int64_t(cc) * (4 * B), w[r]);
      const uint16_t sv = __ldg(srow[r] + g);
      sh[r] = live ? sv : uint16_t(0);  // +0.0 in fp16
      if constexpr (F == 0) {
        const uint16_t ov = __ldg(orow[r] + g);
        oh[r] = live ? ov : uint16_t(0);
      }
    }
    float xv[TT][8], xs[TT];
#pragma unroll
    for (int t = 0; t < TT; ++t) {
      const int tt = min(t, p.T - 1);
      const float4* xp = reinterpret_cast<const float4*>(p.x + int64_t(tt) * p.cols +
                                                         cc * kChunkValues + sub * 8);
      const float4 a = __ldg(xp), b = __ldg(xp + 1);
      xv[t][0] = a.x; xv[t][1] = a.y; xv[t][2] = a.z; xv[t][3] = a.w;
      xv[t][4] = b.x; xv[t][5] = b.y; xv[t][6] = b.z; xv[t][7] = b.w;
      xs[t] = ((xv[t][0] + xv[t][1]) + (xv[t][2] + xv[t][3])) +
              ((xv[t][4] + xv[t][5]) + (xv[t][6] + xv[t][7]));
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sr = f16_bits_to_f32(sh[r]);
      const float orr = F == 0 ? f16_bits_to_f32(oh[r]) : -centre * sr;
      float v[8];
      decode8<B, LUT>(w[r], sub, book, v);
#pragma unroll
      for (int t = 0; t < TT; ++t) {
        float d = v[0] * xv[t][0];
#pragma unroll
        for (int k = 1; k < 8; ++k) d = fmaf(v[k], xv[t][k], d);
        acc[r][t] = LUT ? fmaf(sr, d, acc[r][t]) : fmaf(sr, d, fmaf(orr, xs[t], acc[r][t]));
      }
    }
  }

  if (p.n_terms > 0) {
    pdl_wait();  // the h of the terms come from the kernel this one may overlap
    for (int k = 0; k < p.n_terms; ++k) {
      const GemvTerm& tm = p.terms[k];
      for (int64_t j = threadIdx.x; j < tm.rank; j += kThreads) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int64_t li = row[r] * tm.rank + j;
          const float l = tm.L_f16 ? f16_bits_to_f32(static_cast<const uint16_t*>(tm.L)[li])
                                   : static_cast<const float*>(tm.L)[li];
#pragma unroll
          for (int t = 0; t < TT; ++t)
            acc[r][t] = fmaf(l, tm.h[min(t, p.T - 1) * tm.rank + j], acc[r][t]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < TT; ++t) {
      float v = acc[r][t];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) red[warp][r][t] = v;
    }
  __syncthreads();
  store_row_sums(red, p.y, p.rows, row0, p.T, p.accumulate);
}

// One thread per (row, chunk, sub): eight F32 values, stored as two float4.
template <int B, int F>
__global__ void packed_dequant_kernel(PackedView w, int64_t row_begin, int64_t nrows,
                                      float* __restrict__ out) {
  constexpr bool LUT = F == 2;
  const int64_t nchunks = w.cols / kChunkValues, per_row = nchunks * 4, total = nrows * per_row;
  const int64_t row_bytes = nchunks * 4 * B, ngroups = w.cols / w.group;
  const int64_t cpg = w.group / kChunkValues;
  const float centre = float(1 << (B - 1));
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t lr = e / per_row, rem = e - lr * per_row, c = rem >> 2;
    const int sub = int(rem & 3);
    const int64_t r = row_begin + lr;
    uint32_t wd[3];
    load_chunk<B>(w.codes + r * row_bytes + c * (4 * B) + lane_offset<B>(sub), wd);
    float v[8];
    decode8<B, LUT>(wd, sub, w.codebook, v);
    const int64_t g = c / cpg;
    const float s = f16_bits_to_f32(w.scales[r * ngroups + g]);
    const float o = F == 0 ? f16_bits_to_f32(w.offsets[r * ngroups + g]) : 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k)
      v[k] = F == 0 ? fmaf(v[k], s, o) : F == 1 ? (v[k] - centre) * s : v[k] * s;
    float4* dst = reinterpret_cast<float4*>(out + lr * w.cols + c * kChunkValues + sub * 8);
    dst[0] = make_float4(v[0], v[1], v[2], v[3]);
    dst[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
}

// ------------------------------------------------------------------ encoding
// One thread per chunk. Its 32 codes arrive as eight little-endian words (word j holds codes
// 4j .. 4j+3, one per byte), and with every code below 2^B each byte of the layout is a
// whole-word shift-and-or of them: at b = 4 byte k holds codes k and k+16, so word j of the
// chunk is w[j] | w[j+4] << 4; at b = 2 byte k holds k, k+8, k+16, k+24; at b = 3 the 12-bit
// field of values j, j+8, j+16, j+24 sits at bit 12j of the 96-bit chunk. A code that does not
// fit spills into its neighbours, but the call then reports it and the result is dropped.
template <int B>
__device__ __forceinline__ void encode_words(const uint32_t w[8], uint32_t out[B]) {
  if constexpr (B == 8) {
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = w[j];
  } else if constexpr (B == 4) {
#pragma unroll
    for (int j = 0; j < 4; ++j) out[j] = w[j] | w[j + 4] << 4;
  } else if constexpr (B == 2) {
#pragma unroll
    for (int j = 0; j < 2; ++j) out[j] = w[j] | w[j + 2] << 2 | w[j + 4] << 4 | w[j + 6] << 6;
  } else {
    uint64_t f[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {  // codes j + 8q are byte j % 4 of words j / 4 + 2q
      const int sh = 8 * (j & 3), q = j >> 2;
      f[j] = uint64_t((w[q] >> sh & 0xFFu) | (w[q + 2] >> sh & 0xFFu) << 3 |
                      (w[q + 4] >> sh & 0xFFu) << 6 | (w[q + 6] >> sh & 0xFFu) << 9);
    }
    const uint64_t lo = f[0] | f[1] << 12 | f[2] << 24 | f[3] << 36 | f[4] << 48 | f[5] << 60;
    out[0] = uint32_t(lo);
    out[1] = uint32_t(lo >> 32);
    out[2] = uint32_t(f[5] >> 4 | f[6] << 8 | f[7] << 20);
  }
}

// codes [nchunks * 32] (16-byte aligned) -> packed [nchunks * 4B]. The first code >= 2^B, as
// (flat index << 8 | code), goes to *bad by atomicMin (a thread's chunks come in increasing
// order, and its scan stops at the first bad code of a chunk).
template <int B>
__global__ void packed_encode_kernel(const uint8_t* __restrict__ codes, int64_t nchunks,
                                     uint8_t* __restrict__ packed,
                                     unsigned long long* __restrict__ bad) {
  constexpr uint32_t high = (0xFFu << B & 0xFFu) * 0x01010101u;  // bits >= B of every byte
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nchunks;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint4* src = reinterpret_cast<const uint4*>(codes + i * kChunkValues);
    const uint4 a = src[0], b = src[1];
    const uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    if constexpr (high != 0) {
      uint32_t any = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) any |= w[j];
      if (any & high) {
        for (int k = 0; k < kChunkValues; ++k) {
          const uint32_t c = w[k >> 2] >> 8 * (k & 3) & 0xFFu;
          if (c >> B) {
            atomicMin(bad, (static_cast<unsigned long long>(i * kChunkValues + k) << 8) | c);
            break;
          }
        }
      }
    }
    uint32_t out[B];
    encode_words<B>(w, out);
    uint8_t* dst = packed + i * (4 * B);
    if constexpr (B == 3) {
      uint32_t* d = reinterpret_cast<uint32_t*>(dst);
      d[0] = out[0];
      d[1] = out[1];
      d[2] = out[2];
    } else if constexpr (B == 2) {
      *reinterpret_cast<uint2*>(dst) = make_uint2(out[0], out[1]);
    } else {
      uint4* d = reinterpret_cast<uint4*>(dst);
#pragma unroll
      for (int j = 0; j < B / 4; ++j)
        d[j] = make_uint4(out[4 * j], out[4 * j + 1], out[4 * j + 2], out[4 * j + 3]);
    }
  }
}

// The first index (in flat order) of an F16 inf or NaN into *first by atomicMin.
__global__ void f16_nonfinite_kernel(const uint16_t* __restrict__ h, int64_t n,
                                     unsigned long long* __restrict__ first) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x)
    if ((h[e] & 0x7C00u) == 0x7C00u) {
      atomicMin(first, static_cast<unsigned long long>(e));
      return;  // this thread's later elements have larger indices
    }
}

template <int B>
void launch_encode(const uint8_t* codes, int64_t nchunks, uint8_t* packed,
                   unsigned long long* bad) {
  packed_encode_kernel<B><<<grid_for(nchunks, 256), 256, 0, stream()>>>(codes, nchunks, packed, bad);
  LRQ_CUDA_LAUNCHED();
}


// ------------------------------------------------------------------ dispatch
template <int B, int F, int R, int TT, int U = 2>
void launch_gemv(const GemvParams& p) {
  const unsigned blocks = unsigned((p.rows + R - 1) / R);
  launch_kernel(packed_gemv_kernel<B, F, R, TT, U>, blocks, kThreads, 0, p.n_terms > 0 && g_pdl,
                p);
}

// Rows per CTA: more rows share each x load; fewer keep registers (x is TT x 8 floats) in check.
template <int B, int F>
void gemv_tokens(const GemvParams& p) {
  if (p.T <= 1) {
    // w3: R8 U2 (-2..-6%), w2: R4 U1 (-12..-15%), w4/w8: R4 U2.
    const int rows = g_rows1 ? g_rows1 : B == 3 ? 8 : 4;
    const int unroll = g_unroll1 ? g_unroll1 : B == 2 ? 1 : 2;
    if (rows == 8)
      unroll == 1 ? launch_gemv<B, F, 8, 1, 1>(p) : launch_gemv<B, F, 8, 1, 2>(p);
    else
      unroll == 1 ? launch_gemv<B, F, 4, 1, 1>(p) : launch_gemv<B, F, 4, 1, 2>(p);
  } else if (p.T <= 2) launch_gemv<B, F, 4, 2>(p);
  else if (p.T <= 4) launch_gemv<B, F, 2, 4>(p);
  else launch_gemv<B, F, 2, 8>(p);
}

template <int B>
void gemv_format(const GemvParams& p, int format) {
  switch (format) {
    case 0: gemv_tokens<B, 0>(p); break;
    case 1: gemv_tokens<B, 1>(p); break;
    default: gemv_tokens<B, 2>(p); break;
  }
}

template <int B, int F>
void launch_dequant(const PackedView& w, int64_t r0, int64_t n, float* out) {
  const int64_t work = n * (w.cols / kChunkValues) * 4;
  packed_dequant_kernel<B, F><<<grid_for(work, 256), 256, 0, stream()>>>(w, r0, n, out);
  LRQ_CUDA_LAUNCHED();
}

template <int B>
void dequant_format(const PackedView& w, int64_t r0, int64_t n, float* out) {
  switch (w.format) {
    case 0: launch_dequant<B, 0>(w, r0, n, out); break;
    case 1: launch_dequant<B, 1>(w, r0, n, out); break;
    default: launch_dequant<B, 2>(w, r0, n, out); break;
  }
}

void dequant_rows(const PackedView& w, int64_t r0, int64_t n, float* out) {
  if (n == 0) return;
  switch (w.bits) {
    case 2: dequant_format<2>(w, r0, n, out); break;
    case 3: dequant_format<3>(w, r0, n, out); break;
    case 4: dequant_format<4>(w, r0, n, out); break;
    default: dequant_format<8>(w, r0, n, out); break;
  }
}

}  // namespace

void set_packed_pdl(bool on) { g_pdl = on; }

void set_packed_gemv_variant(int rows, int unroll) {
  if (!(rows == 0 && unroll == 0) && ((rows != 4 && rows != 8) || (unroll != 1 && unroll != 2)))
    bad_args("set_packed_gemv_variant", "rows 4 or 8, unroll 1 or 2 (or 0, 0: per width)");
  g_rows1 = rows;
  g_unroll1 = unroll;
}

void packed_gemv(const PackedView& w, const float* x, float* y, int64_t T, bool accumulate,
                 const GemvTerm* terms, int n_terms) {
  if (T < 1 || T > kPackedGemvMaxT || n_terms < 0 || n_terms > kPackedMaxTerms)
    bad_args("packed_gemv", std::to_string(T) + " tokens, " + std::to_string(n_terms) + " terms");
  if (w.cols > INT32_MAX / int64_t(kPackedGemvMaxT))
    bad_args("packed_gemv", std::to_string(w.cols) + " columns exceed the kernel's index range");
  if (packed_gemv_mma_takes(w, T, n_terms)) {
    packed_gemv_mma(w, x, y, T, accumulate, terms, n_terms, g_pdl);
    return;
  }
  GemvParams p = {};
  p.codes = w.codes;
  p.scales = w.scales;
  p.offsets = w.offsets;
  p.codebook = w.codebook;
  p.x = x;
  p.y = y;
  p.rows = w.rows;
  p.row_bytes = w.cols / kChunkValues * 4 * w.bits;
  p.cols = int(w.cols);
  p.nchunks = int(w.cols / kChunkValues);
  p.ngroups = int(w.cols / w.group);
  const int64_t cpg = w.group / kChunkValues;
  if (p.nchunks * cpg >= (int64_t(1) << 32))
    bad_args("packed_gemv", "group " + std::to_string(w.group) + " of " + std::to_string(w.cols) +
                                " columns exceeds the kernel's index range");
  p.chunk_is_group = cpg == 1;
  p.group_mul = cpg == 1 ? 0u : unsigned(((int64_t(1) << 32) + cpg - 1) / cpg);
  p.T = int(T);
  p.accumulate = accumulate;
  p.n_terms = n_terms;
  for (int k = 0; k < n_terms; ++k) p.terms[k] = terms[k];
  switch (w.bits) {
    case 2: gemv_format<2>(p, w.format); break;
    case 3: gemv_format<3>(p, w.format); break;
    case 4: gemv_format<4>(p, w.format); break;
    default: gemv_format<8>(p, w.format); break;
  }
}

void slab_gemm(int64_t rows, int64_t cols, const float* x, float* y, int64_t T, bool accumulate,
               const std::function<void(int64_t, int64_t, float*)>& dequant) {
  if (T == 0 || rows == 0) return;
  const int64_t slab = std::clamp<int64_t>(kSlabElems / cols, 1, rows);
  DeviceScratch buf(size_t(slab * cols) * sizeof(float));
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  if (bf16_matmul()) {
    DeviceScratch xs(size_t(T * cols) * sizeof(uint16_t));
    DeviceScratch w16(size_t(slab * cols) * sizeof(uint16_t));
    to_bf16(x, xs.as<uint16_t>(), T * cols);
    for (int64_t r0 = 0; r0 < rows; r0 += slab) {
      const int64_t n = std::min(slab, rows - r0);
      dequant(r0, n, buf.as<float>());
      to_bf16(buf.as<float>(), w16.as<uint16_t>(), n * cols);
      gemm_bf16(true, false, n, T, cols, w16.as<uint16_t>(), cols, xs.as<uint16_t>(), cols, beta,
                y + r0, rows);
    }
    return;
  }
  const cublasComputeType_t compute =
      allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  for (int64_t r0 = 0; r0 < rows; r0 += slab) {
    const int64_t n = std::min(slab, rows - r0);
    dequant(r0, n, buf.as<float>());
    // Column-major view: y^T (rows x T, ld rows) = Wslab (n x cols)^T' x^T; see blas_cuda.cu.
    LRQ_CUBLAS_CHECK(cublasGemmEx(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, blas_int(n, "slab_gemm"),
                                  blas_int(T, "slab_gemm"), blas_int(cols, "slab_gemm"), &one,
                                  buf.as<float>(), CUDA_R_32F, blas_int(cols, "slab_gemm"), x,
                                  CUDA_R_32F, blas_int(cols, "slab_gemm"), &beta, y + r0,
                                  CUDA_R_32F, blas_int(rows, "slab_gemm"), compute,
                                  CUBLAS_GEMM_DEFAULT));
  }
}

void packed_gemm(const PackedView& w, const float* x, float* y, int64_t T, bool accumulate) {
  slab_gemm(w.rows, w.cols, x, y, T, accumulate,
            [&](int64_t r0, int64_t n, float* out) { dequant_rows(w, r0, n, out); });
}

void packed_dequantize(const PackedView& w, float* out) { dequant_rows(w, 0, w.rows, out); }

int64_t packed_encode(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* packed,
                      int* bad_code) {
  if (rows < 0 || cols < 0 || cols % kChunkValues != 0 ||
      (bits != 2 && bits != 3 && bits != 4 && bits != 8))
    bad_args("packed_encode", std::to_string(rows) + "x" + std::to_string(cols) + " codes at " +
                                  std::to_string(bits) + " bits");
  if (reinterpret_cast<uintptr_t>(codes) % 16 != 0 || reinterpret_cast<uintptr_t>(packed) % 16 != 0)
    bad_args("packed_encode", "codes and packed must be 16-byte aligned");
  const int64_t nchunks = rows * (cols / kChunkValues);
  FirstReport bad;
  if (nchunks > 0) {
    switch (bits) {
      case 2: launch_encode<2>(codes, nchunks, packed, bad.ptr()); break;
      case 3: launch_encode<3>(codes, nchunks, packed, bad.ptr()); break;
      case 4: launch_encode<4>(codes, nchunks, packed, bad.ptr()); break;
      default: launch_encode<8>(codes, nchunks, packed, bad.ptr()); break;
    }
  }
  unsigned long long v = 0;
  if (!bad.read(&v)) return -1;
  if (bad_code) *bad_code = int(v & 0xFFu);
  return int64_t(v >> 8);
}

int64_t f16_first_nonfinite(const uint16_t* h, int64_t n) {
  if (n <= 0) return -1;
  FirstReport first;
  f16_nonfinite_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(h, n, first.ptr());
  LRQ_CUDA_LAUNCHED();
  unsigned long long v = 0;
  return first.read(&v) ? int64_t(v) : -1;
}

// ------------------------------------------------------------------ the seam's packed ops
namespace {


PackedView view_of(const Packed& w) {
  PackedView v;
  v.codes = w.codes.data<uint8_t>();
  v.scales = w.scales.data<uint16_t>();
  v.offsets = w.offsets.defined() ? w.offsets.data<uint16_t>() : nullptr;
  v.codebook = w.codebook.defined() ? w.codebook.data<float>() : nullptr;
  v.rows = w.rows();
  v.cols = w.cols();
  v.group = w.group;
  v.bits = w.bits;
  v.format = int(w.format);
  // Fresh device allocations are 256-byte aligned; a view into the middle of one need not be.
  if (reinterpret_cast<uintptr_t>(v.codes) % 8 != 0)
    bad_args("packed", "codes on the GPU must be 8-byte aligned");
  return v;
}

}  // namespace

PackedEncodeResult packed_encode(const Tensor& codes, int bits, const Tensor& packed) {
  const Tensor c = aligned16(codes) ? codes : codes.clone();  // read 16 bytes at a time
  PackedEncodeResult r;
  r.bad = packed_encode(c.data<uint8_t>(), codes.dim(0), codes.dim(1), bits,
                        packed.data<uint8_t>(), &r.code);
  return r;
}

void packed_decode(const Tensor&, int, const Tensor&) {
  bad_args("packed_decode", "codes on the GPU: CPU only");
}

void packed_dequantize(const Packed& w, const Tensor& out) {
  if (w.rows() == 0) return;
  packed_dequantize(view_of(w), out.data<float>());
}

void packed_matmul(const Packed& w, const Tensor& x, const Tensor& y, bool accumulate,
                   std::span<const LowRankTerm> terms) {
  const int64_t T = x.dim(0);
  if (T == 0) return;
  const PackedView v = view_of(w);
  const Tensor xa = aligned16(x) ? x : x.clone();  // the kernels read x 16 bytes at a time
  if (T <= kPackedGemvMaxT && int64_t(terms.size()) <= kPackedMaxTerms) {
    GemvTerm gt[kPackedMaxTerms];
    for (size_t k = 0; k < terms.size(); ++k)
      gt[k] = {terms[k].L.raw(), terms[k].L.dtype() == DType::F16, terms[k].h.data<float>(),
               terms[k].L.dim(1)};
    packed_gemv(v, xa.data<float>(), y.data<float>(), T, accumulate, gt, int(terms.size()));
    return;
  }
  packed_gemm(v, xa.data<float>(), y.data<float>(), T, accumulate);
  // Terms the fused kernel does not take: y += h L^T through the seam.
  for (const LowRankTerm& tm : terms) {
    Tensor z = Tensor::empty({T, w.rows()}, DType::F32, x.device());
    ops::linear(tm.h, tm.L, z);
    ops::add_inplace(y, z);
  }
}

int64_t first_nonfinite(const Tensor& x) {
  return f16_first_nonfinite(x.data<uint16_t>(), x.numel());
}

}  // namespace lrq::cuda
