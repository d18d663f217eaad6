// The transformer's own primitives on the GPU: RMSNorm, RoPE, causal GQA attention, SwiGLU,
// residual adds and the embedding lookup. Activations are F32; weights may be F32/F16/BF16.
// Each kernel computes what its CPU twin computes, in the same precision, so the two agree to
// rounding (tests/backend_gpu_test.cpp holds them to that); the one exception is the fused BF16
// attention prefill, taken only when TF32 is allowed. F64 calls (gradient checks) go to
// grad_cuda.cu before anything here runs.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/grad_cuda.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/reduce.cuh"
#include "backend/cuda/widen.cuh"

namespace lrq::cuda {
namespace {

__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// ------------------------------------------------------------------ RMSNorm
// One CTA per row. The sum of squares is accumulated in double, as on the CPU, so the scale
// factor rounds to the same float almost always.
__global__ void rmsnorm_kernel(const float* x, const void* w, Stored wk, float eps, float* out,
                               int64_t d) {
  const float* r = x + blockIdx.x * d;
  float* o = out + blockIdx.x * d;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += double(r[i]) * r[i];
  ss = block_sum(ss);
  const float inv = 1.0f / sqrtf(float(ss / double(d)) + eps);
  // Each thread rewrites only the elements it read, so out may alias x.
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = load_f32(w, wk, i) * (r[i] * inv);
}

// The same for rows of up to 1024 * V floats in 16-byte pieces (d % 4 == 0, aligned rows): the
// row stays in registers between the sum and the scaling, so x is read once (the loop above
// reads it twice and ran at ~1.4 TB/s on a 7B activation).
template <int V>
__global__ void rmsnorm_vec_kernel(const float4* x, const void* w, Stored wk, float eps,
                                   float4* out, int64_t d4) {
  const float4* r = x + blockIdx.x * d4;
  float4 v[V];
  double ss = 0;
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const int64_t i = threadIdx.x + int64_t(k) * blockDim.x;
    v[k] = i < d4 ? r[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    ss += double(v[k].x) * v[k].x + double(v[k].y) * v[k].y + double(v[k].z) * v[k].z +
          double(v[k].w) * v[k].w;
  }
  ss = block_sum(ss);
  const float inv = 1.0f / sqrtf(float(ss / double(4 * d4)) + eps);
  float4* o = out + blockIdx.x * d4;
#pragma unroll
  for (int k = 0; k < V; ++k) {
    const int64_t i = threadIdx.x + int64_t(k) * blockDim.x;
    if (i < d4)
      o[i] = make_float4(load_f32(w, wk, 4 * i) * (v[k].x * inv),
                         load_f32(w, wk, 4 * i + 1) * (v[k].y * inv),
                         load_f32(w, wk, 4 * i + 2) * (v[k].z * inv),
                         load_f32(w, wk, 4 * i + 3) * (v[k].w * inv));
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ------------------------------------------------------------------ RoPE
constexpr int kMaxHalf = 256;  // head_dim up to 512
struct InvFreq {
  float v[kMaxHalf];
};

// One thread per (position, frequency) walks every head of the row: the angle's sincos is
// shared by all heads (one per element cost more than the memory traffic at 32 heads).
__global__ void rope_kernel(float* x, int64_t T, int64_t n_heads, int64_t hd, int64_t pos0,
                            bool interleaved, InvFreq f) {
  const int64_t half = hd / 2, total = T * half;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e % half, t = e / half;
    float s, c;
    sincosf(float(pos0 + t) * f.v[i], &s, &c);
    float* row = x + t * n_heads * hd;  // heads are contiguous within a row
    const int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
#pragma unroll 4
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = row + h * hd;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x1 * c + x0 * s;
    }
  }
}

// ------------------------------------------------------------------ attention
// One CTA per (query, head, key split); its warps take every kWarps-th key of the split and keep
// an online softmax (running max, running sum, running weighted sum of values), merged across
// warps at the end. Lane l holds elements l, l+32, ... of the head: C of them, C*32 >= head_dim.
// With one split the CTA writes the output; with several (decode and short chunks, where
// queries x heads alone would leave most of the GPU idle) it writes its partial state and
// attention_combine_kernel merges the splits the same way the warps were merged.
constexpr int kWarps = 4;
constexpr int kMaxSplits = 64;
constexpr int64_t kMinKeysPerSplit = 64;

struct Partials {
  float *max, *sum, *acc;  // [query*head][split], [query*head][split], [...][split][head_dim]
};

template <int C>
__global__ void attention_kernel(const float* __restrict__ q, const float* __restrict__ K,
                                 const float* __restrict__ V, float* __restrict__ out,
                                 Partials part, int64_t n_heads, int64_t group, int64_t d,
                                 int64_t pos0, float scale) {
  __shared__ float s_max[kWarps], s_sum[kWarps], s_acc[kWarps][C * 32];
  const int64_t t = blockIdx.x / n_heads, h = blockIdx.x % n_heads, g = h / group;
  const int64_t qw = n_heads * d, kw = n_heads / group * d;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int splits = gridDim.y;
  const int64_t keys = pos0 + t + 1;  // causal: positions 0..pos0+t
  const int64_t chunk = (keys + splits - 1) / splits;
  const int64_t j0 = blockIdx.y * chunk, j1 = min(keys, j0 + chunk);
  const float* qr = q + t * qw + h * d;
  float qv[C], acc[C];
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int64_t i = lane + 32 * c;
    qv[c] = i < d ? qr[i] : 0.0f;
    acc[c] = 0.0f;
  }
  float mx = -INFINITY, sum = 0.0f;
  for (int64_t j = j0 + warp; j < j1; j += kWarps) {
    const float* kr = K + j * kw + g * d;
    const float* vr = V + j * kw + g * d;
    float dot = 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int64_t i = lane + 32 * c;
      if (i < d) dot += qv[c] * kr[i];
    }
    const float s = scale * warp_sum(dot);
    const float m2 = fmaxf(mx, s), corr = expf(mx - m2), p = expf(s - m2);
    sum = sum * corr + p;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int64_t i = lane + 32 * c;
      acc[c] = acc[c] * corr + (i < d ? p * vr[i] : 0.0f);
    }
    mx = m2;
  }
  if (lane == 0) {
    s_max[warp] = mx;
    s_sum[warp] = sum;
  }
#pragma unroll
  for (int c = 0; c < C; ++c) s_acc[warp][lane + 32 * c] = acc[c];
  __syncthreads();
  if (warp != 0) return;
  float M = -INFINITY;
  for (int w = 0; w < kWarps; ++w) M = fmaxf(M, s_max[w]);
  float wt[kWarps], total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    wt[w] = s_max[w] == -INFINITY ? 0.0f : expf(s_max[w] - M);  // a warp may have had no key
    total += wt[w] * s_sum[w];
  }
  const int64_t slot = int64_t(blockIdx.x) * splits + blockIdx.y;
  if (splits > 1 && lane == 0) {
    part.max[slot] = M;
    part.sum[slot] = total;
  }
  const float inv = 1.0f / total;
  float* o = out + t * qw + h * d;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int64_t i = lane + 32 * c;
    if (i >= d) continue;
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v += wt[w] * s_acc[w][i];
    if (splits > 1)
      part.acc[slot * d + i] = v;
    else
      o[i] = v * inv;
  }
}

// One CTA per (query, head): rescales each split's partial state to the common maximum.
__global__ void attention_combine_kernel(Partials part, float* __restrict__ out, int splits,
                                         int64_t n_heads, int64_t d) {
  __shared__ float wt[kMaxSplits];
  __shared__ float inv;
  const int64_t base = int64_t(blockIdx.x) * splits;
  if (threadIdx.x == 0) {
    float M = -INFINITY, total = 0.0f;
    for (int s = 0; s < splits; ++s) M = fmaxf(M, part.max[base + s]);
    for (int s = 0; s < splits; ++s) {
      const float m = part.max[base + s];
      wt[s] = m == -INFINITY ? 0.0f : expf(m - M);  // a split may have had no key
      total += wt[s] * part.sum[base + s];
    }
    inv = 1.0f / total;
  }
  __syncthreads();
  const int64_t t = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
  float* o = out + t * n_heads * d + h * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += wt[s] * part.acc[(base + s) * d + i];
    o[i] = v * inv;
  }
}

// ------------------------------------------------------------------ attention, prefill
// Long prefill (calibration windows, perplexity) goes through cuBLAS instead: per chunk of
// queries, S = scale Q K^T for every head (batched GEMMs, tensor cores when TF32 is allowed),
// a causal row softmax in place, then O = P V. The scalar kernel above spends ~7 ms per 2048-token
// window and layer at 7B shapes (an exp and a warp reduction per key); this does the same math
// as two GEMMs. Queries are chunked so that a chunk only multiplies the keys it can see (the
// causal half is mostly skipped) and S stays within a fixed budget.
constexpr int64_t kGemmAttentionMinT = 64;
constexpr int64_t kScoreBudget = int64_t(64) << 20;  // floats in S per chunk (256 MiB)
constexpr int64_t kQueryChunk = 256;

// One CTA per (head, query row) of the chunk: row r of head h sees keys 0 .. visible0 + r.
// The masked tail is written as 0 so that P V can run over the full width. With ROW the row is
// held in shared memory, so S is read once and written once.
constexpr int64_t kSoftmaxSmemMax = 8192;  // floats of a row kept in shared memory (32 KiB)

template <bool ROW>
__global__ void causal_softmax_kernel(float* S, int64_t Tq, int64_t Tk, int64_t visible0) {
  __shared__ float red[32];
  extern __shared__ float cached[];
  const int64_t row = blockIdx.x, r = row % Tq;
  float* s = S + row * Tk;
  const int64_t n = min(Tk, visible0 + r + 1);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  auto block_reduce = [&](float v, bool is_max) {
    for (int off = 16; off > 0; off >>= 1) {
      const float o = __shfl_xor_sync(0xffffffffu, v, off);
      v = is_max ? fmaxf(v, o) : v + o;
    }
    __syncthreads();  // red may still be read from the previous reduction
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nwarps ? red[lane] : (is_max ? -INFINITY : 0.0f);
    for (int off = 16; off > 0; off >>= 1) {
      const float o = __shfl_xor_sync(0xffffffffu, v, off);
      v = is_max ? fmaxf(v, o) : v + o;
    }
    return v;
  };
  float* v = ROW ? cached : s;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float x = s[j];
    if (ROW) v[j] = x;
    mx = fmaxf(mx, x);
  }
  mx = block_reduce(mx, true);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {  // each thread reads what it wrote
    const float e = expf(v[j] - mx);
    v[j] = e;
    sum += e;
  }
  const float inv = 1.0f / block_reduce(sum, false);
  for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) s[j] = j < n ? v[j] * inv : 0.0f;
}

void attention_gemm(const float* q, const float* K, const float* V, float* out, int64_t T,
                    int64_t nh, int64_t nkv, int64_t hd, int64_t pos0, float scale) {
  const int64_t qw = nh * hd, kw = nkv * hd, group = nh / nkv;
  const int64_t Tk_max = pos0 + T;
  const int64_t tq = std::max<int64_t>(1, std::min(kQueryChunk, kScoreBudget / (nh * Tk_max)));
  DeviceScratch scratch(size_t(nh * tq * Tk_max) * sizeof(float));
  float* S = scratch.as<float>();
  const cublasComputeType_t compute =
      allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const float one = 1.0f, zero = 0.0f;
  const char* op = "attention";
  for (int64_t t0 = 0; t0 < T; t0 += tq) {
    const int64_t Tq = std::min(tq, T - t0), Tk = pos0 + t0 + Tq;
    const long long sh = (long long)(Tq * Tk);  // one head's scores
    // Query heads i, i + group, ... share nothing; heads g*group + i for g = 0..nkv-1 form a
    // batch with constant strides (K by hd, Q by group*hd, S by group*Tq*Tk).
    for (int64_t i = 0; i < group; ++i) {
      // Column-major: S_h^T (Tk x Tq) = K_g (hd x Tk)^T Q_h (hd x Tq); see blas_cuda.cu.
      LRQ_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          cublas(), CUBLAS_OP_T, CUBLAS_OP_N, blas_int(Tk, op), blas_int(Tq, op),
          blas_int(hd, op), &scale, K, CUDA_R_32F, blas_int(kw, op), (long long)hd,
          q + t0 * qw + i * hd, CUDA_R_32F, blas_int(qw, op), (long long)(group * hd), &zero,
          S + i * sh, CUDA_R_32F, blas_int(Tk, op), (long long)group * sh, blas_int(nkv, op),
          compute, CUBLAS_GEMM_DEFAULT));
    }
    const int64_t rows = nh * Tq;
    if (rows > INT_MAX) bad_args(op, "too many score rows");
    if (Tk <= kSoftmaxSmemMax)
      causal_softmax_kernel<true><<<unsigned(rows), 256, size_t(Tk) * sizeof(float), stream()>>>(
          S, Tq, Tk, pos0 + t0);
    else
      causal_softmax_kernel<false><<<unsigned(rows), 256, 0, stream()>>>(S, Tq, Tk, pos0 + t0);
    LRQ_CUDA_LAUNCHED();
    for (int64_t i = 0; i < group; ++i) {
      // O_h^T (hd x Tq, ld qw) = V_g^T (hd x Tk, ld kw) P_h^T (Tk x Tq, ld Tk).
      LRQ_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          cublas(), CUBLAS_OP_N, CUBLAS_OP_N, blas_int(hd, op), blas_int(Tq, op),
          blas_int(Tk, op), &one, V, CUDA_R_32F, blas_int(kw, op), (long long)hd, S + i * sh,
          CUDA_R_32F, blas_int(Tk, op), (long long)group * sh, &zero, out + t0 * qw + i * hd,
          CUDA_R_32F, blas_int(qw, op), (long long)(group * hd), blas_int(nkv, op), compute,
          CUBLAS_GEMM_DEFAULT));
    }
  }
}

// ------------------------------------------------------------------ attention, fused prefill
// With TF32 allowed (the fast calibration modes) long prefill runs fused instead: one CTA per
// (query tile, head), kFlashWarps warps of 16 query rows each, a loop over 64-key tiles up
// to the causal limit with the softmax kept online in registers (running max and sum per row,
// the output rescaled when the max grows). The score matrix never reaches global memory, which
// is where attention_gemm spends most of its time (S written, read, rewritten and read again
// in F32). Q, K, P and V are rounded to BF16 for mma.sync (m16n8k16, F32 accumulators); the
// accumulators, the softmax and the output stay F32. K and V are converted to BF16 once per
// call by a separate pass: every query tile reads them again (from L2, mostly), so that halves
// the kernel's dominant traffic and takes the conversion out of its loop.
// K/V tiles arrive by cp.async into two shared-memory stages, the next tile in flight while
// the current one is used, so no warp waits on L2 latency between tiles. K's B fragments come
// by ldmatrix (one instruction per two mma), V's by ldmatrix.trans. Two adjacent C tiles of S
// are exactly one A fragment of P (layouts in mma.cuh), so P never leaves registers.
// Four warps (64 queries) per CTA, two CTAs per SM (168 registers, no spills): measured equal
// to three CTAs per SM (which spill) and faster than eight warps per CTA (bench/NOTES.md).
constexpr int kFlashK = 64, kFlashWarps = 4, kFlashQ = 16 * kFlashWarps;

template <int HD>
constexpr int flash_smem_bytes() {
  return 2 /*stages*/ * 2 /*K, V*/ * kFlashK * (HD + 8) * int(sizeof(__nv_bfloat16));
}

// Q (T x nh*HD), K/V (BF16, pos0+T rows of nkv*HD), out like q; scale_log2 = log2(e)/sqrt(HD), so
// the softmax runs on exp2. Query tiles are taken longest first (the causal triangle makes the
// last tiles the heaviest) so that the short ones fill the tail of the grid.
template <int HD>
__global__ void __launch_bounds__(kFlashWarps * 32, 2)
    flash_attention_kernel(const float* __restrict__ q, const __nv_bfloat16* __restrict__ K,
                           const __nv_bfloat16* __restrict__ V, float* __restrict__ out, int T,
                           int nh, int nkv, int pos0, float scale_log2) {
  constexpr int LD = HD + 8;  // BF16 row stride: rows start 4 banks apart, ldmatrix conflict-free
  constexpr int KSTEPS = HD / 16, DTILES = HD / 8, TILE = kFlashK * LD;
  extern __shared__ __align__(16) __nv_bfloat16 flash_smem[];  // [stage][K, V][key][LD]

  // Positions fit in int (the launcher checks pos0 + T); element offsets are int64.
  const int tiles = (T + kFlashQ - 1) / kFlashQ;
  const int q0 = (tiles - 1 - int(blockIdx.x)) * kFlashQ;
  const int h = blockIdx.y, kvh = h / (nh / nkv);
  const int64_t qw = int64_t(nh) * HD, kw = int64_t(nkv) * HD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;  // chunk rows of c0,c1 and c2,c3

  // This thread's share of the warp's 16 Q rows as BF16 A fragments; rows past T are zeros
  // (their scores stay finite and they are never written).
  uint32_t qa[KSTEPS][4];
  {
    const float* q_r0 = q + row0 * qw + h * HD;
    const float* q_r1 = q + row1 * qw + h * HD;
#pragma unroll
    for (int kk = 0; kk < KSTEPS; ++kk) {
      const int c = kk * 16 + 2 * t;
      const float2 z = make_float2(0.0f, 0.0f);
      const float2 x0 = row0 < T ? *reinterpret_cast<const float2*>(q_r0 + c) : z;
      const float2 x1 = row1 < T ? *reinterpret_cast<const float2*>(q_r1 + c) : z;
      const float2 x2 = row0 < T ? *reinterpret_cast<const float2*>(q_r0 + c + 8) : z;
      const float2 x3 = row1 < T ? *reinterpret_cast<const float2*>(q_r1 + c + 8) : z;
      qa[kk][0] = pack_bf16x2(x0.x, x0.y);
      qa[kk][1] = pack_bf16x2(x1.x, x1.y);
      qa[kk][2] = pack_bf16x2(x2.x, x2.y);
      qa[kk][3] = pack_bf16x2(x3.x, x3.y);
    }
  }

  float o[DTILES][4];
#pragma unroll
  for (int d = 0; d < DTILES; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  // Running max in raw score units (scaled inside the exponent's FMA) and this lane's part of
  // the row sums.
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  // Keys 0 .. n_keys-1 are visible to some valid row of the tile; every row sees key 0, so the
  // running max is finite after the first tile.
  const int n_keys = pos0 + min(q0 + kFlashQ, T);
  const int n_tiles = (n_keys + kFlashK - 1) / kFlashK;
  const int first_abs = pos0 + q0;  // absolute position of the tile's row 0
  const int warp_last_abs = first_abs + warp * 16 + 15;
  const int abs0 = pos0 + row0, abs1 = pos0 + row1;

  // Tile j into stage j % 2, sixteen bytes per copy; keys past n_keys become zeros (they were
  // not converted, and 0 * NaN would poison P V).
  auto load_tile = [&](int j) {
    __nv_bfloat16* Ks = flash_smem + (j & 1) * 2 * TILE;
    __nv_bfloat16* Vs = Ks + TILE;
    const int k0 = j * kFlashK;
    for (int i = threadIdx.x; i < kFlashK * HD / 8; i += kFlashWarps * 32) {
      const int key = i / (HD / 8), c = (i % (HD / 8)) * 8;
      const bool ok = k0 + key < n_keys;
      const int64_t off = (ok ? k0 + key : 0) * kw + kvh * HD + c;
      cp_async16_zfill(Ks + key * LD + c, K + off, ok);
      cp_async16_zfill(Vs + key * LD + c, V + off, ok);
    }
  };

  load_tile(0);
  cp_async_commit();
  for (int j = 0; j < n_tiles; ++j) {
    if (j + 1 < n_tiles) load_tile(j + 1);
    cp_async_commit();  // possibly empty: one group per tile keeps wait<1> meaning "tile j"
    cp_async_wait<1>();
    __syncthreads();  // tile j is in shared memory for every warp
    const int k0 = j * kFlashK;
    if (k0 <= warp_last_abs) {  // else the whole tile is in this warp's future
      const __nv_bfloat16* Ks = flash_smem + (j & 1) * 2 * TILE;
      const __nv_bfloat16* Vs = Ks + TILE;

      // S = Q K^T for 16 rows x 64 keys: eight C tiles of 8 keys; one ldmatrix gives the B
      // fragments of two k-steps. Four tiles at a time, so that four independent mma stand
      // between two into the same accumulator.
      float s[8][4];
#pragma unroll
      for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KSTEPS; kk += 2) {
#pragma unroll
        for (int n0 = 0; n0 < 8; n0 += 4) {
          uint32_t b[4][4];
#pragma unroll
          for (int n = 0; n < 4; ++n)
            ldmatrix_x4(b[n], Ks + ((n0 + n) * 8 + lane % 8) * LD + kk * 16 + (lane / 8) * 8);
#pragma unroll
          for (int n = 0; n < 4; ++n) mma_bf16(s[n0 + n], qa[kk], b[n][0], b[n][1]);
#pragma unroll
          for (int n = 0; n < 4; ++n) mma_bf16(s[n0 + n], qa[kk + 1], b[n][2], b[n][3]);
        }
      }
      // Mask keys after a row's position (only on tiles that reach past the tile's first row:
      // the diagonal ones and the ragged end of the keys).
      if (k0 + kFlashK - 1 > first_abs) {
#pragma unroll
        for (int n = 0; n < 8; ++n) {
          const int key = k0 + n * 8 + 2 * t;
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (key + (e & 1) > (e < 2 ? abs0 : abs1)) s[n][e] = -INFINITY;
        }
      }
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
        mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
      }
      // A row is spread over the four lanes of a quad.
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
      const float a0 = exp2_approx((m0 - mn0) * scale_log2);  // 0 on the first tile
      const float a1 = exp2_approx((m1 - mn1) * scale_log2);
      m0 = mn0;
      m1 = mn1;
      const float ms0 = mn0 * scale_log2, ms1 = mn1 * scale_log2;
      float p0 = 0.0f, p1 = 0.0f;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        s[n][0] = exp2_approx(fmaf(s[n][0], scale_log2, -ms0));
        s[n][1] = exp2_approx(fmaf(s[n][1], scale_log2, -ms0));
        s[n][2] = exp2_approx(fmaf(s[n][2], scale_log2, -ms1));
        s[n][3] = exp2_approx(fmaf(s[n][3], scale_log2, -ms1));
        p0 += s[n][0] + s[n][1];
        p1 += s[n][2] + s[n][3];
      }
      l0 = l0 * a0 + p0;
      l1 = l1 * a1 + p1;
#pragma unroll
      for (int d = 0; d < DTILES; ++d) {
        o[d][0] *= a0;
        o[d][1] *= a0;
        o[d][2] *= a1;
        o[d][3] *= a1;
      }
      // O += P V: 16 keys per step; V's B fragments come transposed out of the row-major tile.
#pragma unroll
      for (int kk = 0; kk < kFlashK / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                                pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
        const __nv_bfloat16* vr =
            Vs + (kk * 16 + lane % 8 + (lane / 8 % 2) * 8) * LD + (lane / 16) * 8;
#pragma unroll
        for (int dn = 0; dn < HD / 16; ++dn) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, vr + dn * 16);
          mma_bf16(o[2 * dn], pa, b[0], b[1]);
          mma_bf16(o[2 * dn + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with stage j % 2 before tile j + 2 lands there
  }
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float i0 = 1.0f / l0, i1 = 1.0f / l1;
#pragma unroll
  for (int d = 0; d < DTILES; ++d) {
    const int c = h * HD + d * 8 + 2 * t;
    if (row0 < T) *reinterpret_cast<float2*>(out + row0 * qw + c) = make_float2(o[d][0] * i0, o[d][1] * i0);
    if (row1 < T) *reinterpret_cast<float2*>(out + row1 * qw + c) = make_float2(o[d][2] * i1, o[d][3] * i1);
  }
}

// The first n entries of K and V (F32, n % 4 == 0) as BF16, nearest even.
__global__ void kv_to_bf16_kernel(const float4* __restrict__ K, const float4* __restrict__ V,
                                  uint2* __restrict__ Kb, uint2* __restrict__ Vb, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float4 k = K[i], v = V[i];
    Kb[i] = make_uint2(pack_bf16x2(k.x, k.y), pack_bf16x2(k.z, k.w));
    Vb[i] = make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
  }
}

template <int HD>
void launch_flash(const float* q, const __nv_bfloat16* K, const __nv_bfloat16* V, float* out,
                  int64_t T, int64_t nh, int64_t nkv, int64_t pos0, float scale_log2) {
  // Callers check that positions fit in int.
  constexpr int bytes = flash_smem_bytes<HD>();
  static const bool opted_in = (allow_smem(flash_attention_kernel<HD>, bytes), true);
  (void)opted_in;
  const dim3 grid{unsigned((T + kFlashQ - 1) / kFlashQ), unsigned(nh)};
  flash_attention_kernel<HD><<<grid, kFlashWarps * 32, bytes, stream()>>>(
      q, K, V, out, int(T), int(nh), int(nkv), int(pos0), scale_log2);
}

// The fused path when it applies: TF32 allowed, head_dim 64 or 128, 16-byte aligned operands
// (float4 loads). Returns false to leave the call to attention_gemm.
bool flash_attention(const float* q, const float* K, const float* V, float* out, int64_t T,
                     int64_t nh, int64_t nkv, int64_t hd, int64_t pos0) {
  if (!bf16_matmul() || (hd != 64 && hd != 128)) return false;
  if (!aligned16(q) || !aligned16(K) || !aligned16(V) || !aligned16(out)) return false;
  if (pos0 + T > INT_MAX || nh > 65535) return false;
  // Only the pos0 + T rows this call can see; rows past them are never read.
  const int64_t n = (pos0 + T) * nkv * hd;
  DeviceScratch kv(2 * size_t(n) * sizeof(__nv_bfloat16));
  __nv_bfloat16 *Kb = kv.as<__nv_bfloat16>(), *Vb = Kb + n;
  kv_to_bf16_kernel<<<grid_for(n / 4, 256), 256, 0, stream()>>>(
      reinterpret_cast<const float4*>(K), reinterpret_cast<const float4*>(V),
      reinterpret_cast<uint2*>(Kb), reinterpret_cast<uint2*>(Vb), n / 4);
  LRQ_CUDA_LAUNCHED();
  const float scale_log2 = float(1.4426950408889634 / std::sqrt(double(hd)));
  if (hd == 64) launch_flash<64>(q, Kb, Vb, out, T, nh, nkv, pos0, scale_log2);
  else launch_flash<128>(q, Kb, Vb, out, T, nh, nkv, pos0, scale_log2);
  LRQ_CUDA_LAUNCHED();
  return true;
}

int multiprocessors() {
  static const int n = [] {
    int dev = 0, count = 0;
    LRQ_CUDA_CHECK(cudaGetDevice(&dev));
    LRQ_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev));
    return count;
  }();
  return n;
}

// ------------------------------------------------------------------ elementwise
// The elementwise kernels also come in 16-byte pieces (the scalar loops ran at 1.8-1.9 TB/s
// on 7B activations); the arithmetic per element is the same, so are the results.
__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__global__ void silu_mul_kernel(const float* g, const float* u, float* o, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    o[i] = silu_times(g[i], u[i]);
}

__global__ void silu_mul4_kernel(const float4* g, const float4* u, float4* o, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float4 a = g[i], b = u[i];
    o[i] = make_float4(silu_times(a.x, b.x), silu_times(a.y, b.y), silu_times(a.z, b.z),
                       silu_times(a.w, b.w));
  }
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] += y[i];
}

__global__ void add4_kernel(float4* x, const float4* y, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x) {
    float4 a = x[i];
    const float4 b = y[i];
    a.x += b.x;
    a.y += b.y;
    a.z += b.z;
    a.w += b.w;
    x[i] = a;
  }
}

__global__ void add_row_kernel(float* x, const void* b, Stored bk, int64_t d, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] += load_f32(b, bk, i % d);
}

__global__ void embedding_kernel(const void* table, Stored tk, const int32_t* ids, float* out,
                                 int64_t d) {
  const int64_t row = ids[blockIdx.x];
  float* o = out + blockIdx.x * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = load_f32(table, tk, row * d + i);
}

}  // namespace

void rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) {
  if (x.dtype() == DType::F64) return rmsnorm_f64(x, w, eps, out);
  const int64_t d = x.dim(-1), T = x.numel() / d;
  if (T == 0) return;
  if (T > INT_MAX) bad_args("rmsnorm", "too many rows in " + x.str());
  const Stored wk = stored_kind(w, "rmsnorm");
  const int64_t d4 = d / 4;
  if (d % 4 == 0 && d4 <= 2048 && aligned16(x.raw()) && aligned16(out.raw())) {
    const auto* xv = static_cast<const float4*>(x.raw());
    auto* ov = static_cast<float4*>(out.raw());
    if (d4 <= 1024)
      rmsnorm_vec_kernel<4><<<unsigned(T), 256, 0, stream()>>>(xv, w.raw(), wk, eps, ov, d4);
    else
      rmsnorm_vec_kernel<8><<<unsigned(T), 256, 0, stream()>>>(xv, w.raw(), wk, eps, ov, d4);
  } else {
    rmsnorm_kernel<<<unsigned(T), 256, 0, stream()>>>(x.data<float>(), w.raw(), wk, eps,
                                                      out.data<float>(), d);
  }
  LRQ_CUDA_LAUNCHED();
}

void rope(const Tensor& x, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
          bool interleaved) {
  if (x.dtype() == DType::F64) return rope_f64(x, n_heads, hd, pos0, theta, interleaved);
  const int64_t width = x.dim(-1);
  if (hd / 2 > kMaxHalf) bad_args("rope", "head_dim " + std::to_string(hd) + " above 512");
  const int64_t half = hd / 2, T = x.numel() / width;
  // The frequencies exactly as the CPU computes them (host float pow), so angles agree.
  InvFreq f;
  for (int64_t i = 0; i < half; ++i) f.v[i] = 1.0f / std::pow(theta, float(2 * i) / float(hd));
  if (T == 0) return;
  rope_kernel<<<grid_for(T * half, 256), 256, 0, stream()>>>(
      x.data<float>(), T, n_heads, hd, pos0, interleaved, f);
  LRQ_CUDA_LAUNCHED();
}

void attention(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
               int64_t hd, int64_t pos0, const Tensor& out) {
  if (q.dtype() == DType::F64) return attention_f64(q, K, V, nh, nkv, hd, pos0, out);
  const int64_t T = q.numel() / (nh * hd);
  if (hd > 256) bad_args("attention", "head_dim " + std::to_string(hd) + " above 256");
  if (T == 0) return;
  if (T * nh > INT_MAX) bad_args("attention", "too many queries in " + q.str());
  const float scale = 1.0f / std::sqrt(float(hd));
  if (T >= kGemmAttentionMinT) {
    if (flash_attention(q.data<float>(), K.data<float>(), V.data<float>(), out.data<float>(), T,
                        nh, nkv, hd, pos0))
      return;
    attention_gemm(q.data<float>(), K.data<float>(), V.data<float>(), out.data<float>(), T, nh,
                   nkv, hd, pos0, scale);
    return;
  }
  const int64_t ctas = T * nh, group = nh / nkv;
  // Enough splits to give every multiprocessor four CTAs, each split at least kMinKeysPerSplit
  // keys long (for the longest query).
  const int64_t want = (4 * multiprocessors() + ctas - 1) / ctas;
  const int64_t by_keys = (pos0 + T + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
  const int splits = int(std::max<int64_t>(1, std::min({want, by_keys, int64_t(kMaxSplits)})));
  const size_t slots = size_t(ctas) * splits;
  DeviceScratch scratch(splits > 1 ? slots * (2 + size_t(hd)) * sizeof(float) : 0);
  Partials part{scratch.as<float>(), scratch.as<float>() + slots, scratch.as<float>() + 2 * slots};
  const dim3 grid{unsigned(ctas), unsigned(splits)};
  const float *qp = q.data<float>(), *kp = K.data<float>(), *vp = V.data<float>();
  float* op = out.data<float>();
  if (hd <= 64)
    attention_kernel<2><<<grid, kWarps * 32, 0, stream()>>>(qp, kp, vp, op, part, nh, group, hd, pos0, scale);
  else if (hd <= 128)
    attention_kernel<4><<<grid, kWarps * 32, 0, stream()>>>(qp, kp, vp, op, part, nh, group, hd, pos0, scale);
  else
    attention_kernel<8><<<grid, kWarps * 32, 0, stream()>>>(qp, kp, vp, op, part, nh, group, hd, pos0, scale);
  LRQ_CUDA_LAUNCHED();
  if (splits > 1) {
    attention_combine_kernel<<<unsigned(ctas), 128, 0, stream()>>>(part, op, splits, nh, hd);
    LRQ_CUDA_LAUNCHED();
  }
}

void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  if (gate.dtype() == DType::F64) return silu_mul_f64(gate, up, out);
  const int64_t n = gate.numel();
  if (n == 0) return;
  if (n % 4 == 0 && aligned16(gate.raw()) && aligned16(up.raw()) && aligned16(out.raw()))
    silu_mul4_kernel<<<grid_for(n / 4, 256), 256, 0, stream()>>>(
        static_cast<const float4*>(gate.raw()), static_cast<const float4*>(up.raw()),
        static_cast<float4*>(out.raw()), n / 4);
  else
    silu_mul_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(gate.data<float>(), up.data<float>(),
                                                           out.data<float>(), n);
  LRQ_CUDA_LAUNCHED();
}

void add_inplace(const Tensor& x, const Tensor& y) {
  if (x.dtype() == DType::F64) return add_inplace_f64(x, y);
  const int64_t n = x.numel();
  if (n == 0) return;
  if (n % 4 == 0 && aligned16(x.raw()) && aligned16(y.raw()))
    add4_kernel<<<grid_for(n / 4, 256), 256, 0, stream()>>>(static_cast<float4*>(x.raw()),
                                                            static_cast<const float4*>(y.raw()), n / 4);
  else
    add_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(x.data<float>(), y.data<float>(), n);
  LRQ_CUDA_LAUNCHED();
}

void add_row_vector(const Tensor& x, const Tensor& b) {
  const int64_t d = x.dim(-1);
  const int64_t n = x.numel();
  if (n == 0) return;
  add_row_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(
      x.data<float>(), b.raw(), stored_kind(b, "add_row_vector"), d, n);
  LRQ_CUDA_LAUNCHED();
}

void embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) {
  const int64_t d = table.dim(1);
  if (ids.empty() || d == 0) return;
  if (ids.size() > size_t(INT_MAX)) bad_args("embedding", "too many ids");
  const Stored tk = stored_kind(table, "embedding");
  DeviceScratch dev_ids(ids.size_bytes());
  // From pageable memory the copy returns once the source has been read, so ids may go.
  LRQ_CUDA_CHECK(cudaMemcpyAsync(dev_ids.as<int32_t>(), ids.data(), ids.size_bytes(),
                                 cudaMemcpyHostToDevice, stream()));
  embedding_kernel<<<unsigned(ids.size()), 256, 0, stream()>>>(table.raw(), tk,
                                                              dev_ids.as<int32_t>(),
                                                              out.data<float>(), d);
  LRQ_CUDA_LAUNCHED();
}

}  // namespace lrq::cuda
