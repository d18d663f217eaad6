// The transformer's backward passes on the GPU (op_list.h, "transformer backward"), the training
// forward of attention that saves the row log-sum-exp, and the F64 forms of the forward pieces
// (grad_cuda.h). One template per kernel for float and double; each mirrors its CPU twin
// (grad_cpu.cpp, transformer_cpu.cpp): the same formulas, the same quantities accumulated in
// double (sums of squares, RMSNorm's row and column sums, attention's D = rowsum(dO * O)), and
// in F32 the same rounded intermediates where the forward's are reused (1/rms, RoPE's angles).
//
// Attention is tiled after FlashAttention-2: no T x T matrix ever reaches global memory.
//  - forward (attention_train): one CTA per (32-query tile, query head) walks the key tiles up
//    to its causal limit with an online softmax (running max, sum, rescaled output) and writes
//    out and lse = max + log(sum);
//  - backward: D = rowsum(dO * O) per (row, head); then one CTA per (32-key tile, KV head)
//    recomputes P = exp(scale q k - lse) and dS = P (dO v - D) tile by tile for every query
//    tile at or after it and every query head of its group, accumulating dK and dV in
//    registers; and one CTA per (query tile, query head) recomputes the same tiles against
//    every key tile up to its causal limit for dQ. FlashAttention-2 does dQ inside the first
//    pass with atomic adds; the second pass costs two of the five tile products again but
//    needs no atomics, so the result is the same bits on every run.
// The tiles are SIMT (scalar FMAs from shared memory, F32 or F64): correct and tiled, not yet
// fast. Tensor-core tiles (BF16, as the fused inference prefill) are the next step for LRQ's
// training speed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/grad_cuda.h"
#include "backend/cuda/reduce.cuh"
#include "backend/cuda/widen.cuh"

namespace lrq::cuda {
namespace {

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }
template <class F>
__device__ __forceinline__ F dev_max(F a, F b) { return a > b ? a : b; }

// A norm weight as F: an F64 weight as is under F64 activations, every other kind through
// float (as the CPU's convert_to_f32).
template <class F>
__device__ __forceinline__ F load_weight(const void* p, Stored k, int64_t i) {
  if constexpr (std::is_same_v<F, double>)
    if (k == Stored::F64) return static_cast<const double*>(p)[i];
  return F(load_f32(p, k, i));
}

// 1 / sqrt(mean(x^2) + eps) from the row's sum of squares, as rmsnorm computes it (F32: the
// mean rounded to float first, as the F32 kernels of transformer_cuda.cu and the CPU do).
template <class F>
__device__ __forceinline__ F rms_inverse(double ss, int64_t d, float eps) {
  if constexpr (std::is_same_v<F, float>)
    return 1.0f / sqrtf(float(ss / double(d)) + eps);
  else
    return 1.0 / sqrt(ss / double(d) + double(eps));
}

// ------------------------------------------------------------------ RMSNorm
__global__ void rmsnorm_f64_kernel(const double* x, const void* w, Stored wk, float eps,
                                   double* out, int64_t d) {
  const double* r = x + blockIdx.x * d;
  double* o = out + blockIdx.x * d;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += r[i] * r[i];
  ss = block_sum(ss);
  const double inv = rms_inverse<double>(ss, d, eps);
  // Each thread rewrites only the elements it read, so out may alias x.
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = load_weight<double>(w, wk, i) * (r[i] * inv);
}

// Per row t: 1/rms_t (rounded to F, as the forward used it) and c_t = sum_i w_i dy_ti x_ti.
template <class F>
__global__ void rmsnorm_rows_kernel(const F* x, const void* w, Stored wk, float eps, const F* dy,
                                    int64_t d, double* inv, double* c) {
  const F* r = x + blockIdx.x * d;
  const F* g = dy + blockIdx.x * d;
  double ss = 0, cs = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const double xv = r[i];
    ss += xv * xv;
    cs += double(load_weight<F>(w, wk, i)) * double(g[i]) * xv;
  }
  ss = block_sum(ss);
  cs = block_sum(cs);
  if (threadIdx.x == 0) {
    inv[blockIdx.x] = double(rms_inverse<F>(ss, d, eps));
    c[blockIdx.x] = cs;
  }
}

// dw's column sums in two passes with a split fixed by the shape (chunks of rows, then the
// chunks in order): the same bits on every run, without atomics.
__device__ __forceinline__ int64_t gid() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }

template <class F>
__global__ void rmsnorm_dw_partial_kernel(const F* x, const F* dy, const double* inv, int64_t T,
                                          int64_t d, int64_t rows_per, double* part) {
  const int64_t col = gid();
  if (col >= d) return;
  const int64_t t0 = int64_t(blockIdx.y) * rows_per, t1 = min(T, t0 + rows_per);
  double acc = 0;
  for (int64_t t = t0; t < t1; ++t) acc += double(dy[t * d + col]) * double(x[t * d + col]) * inv[t];
  part[int64_t(blockIdx.y) * d + col] = acc;
}

template <class F>
__global__ void rmsnorm_dw_sum_kernel(const double* part, int64_t chunks, int64_t d, F* dw) {
  const int64_t col = gid();
  if (col >= d) return;
  double s = 0;
  for (int64_t k = 0; k < chunks; ++k) s += part[k * d + col];
  dw[col] += F(s);
}

// dx = (1/rms) w dy - x c / (d rms^3). Each element reads its dy before writing dx, and the
// passes above are done with dy, so dx may alias dy.
template <class F>
__global__ void rmsnorm_dx_kernel(const F* x, const void* w, Stored wk, const F* dy,
                                  const double* inv, const double* c, int64_t d, int64_t n, F* dx) {
  for (int64_t e = gid(); e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = e / d, i = e % d;
    const double ri = inv[t];
    const F k = F(c[t] * ri * ri * ri / double(d)), rf = F(ri);
    dx[e] = rf * (load_weight<F>(w, wk, i) * dy[e]) - k * x[e];
  }
}

// ------------------------------------------------------------------ RoPE
constexpr int kMaxHalf = 256;  // head_dim up to 512, as the F32 kernel
template <class F>
struct InvFreq {
  F v[kMaxHalf];
};

// The F32 forward's kernel (transformer_cuda.cu) with a direction: the same angles (sincosf of
// the same float product in F32), the sine negated for the transpose.
template <class F>
__global__ void rope_kernel(F* x, int64_t T, int64_t n_heads, int64_t hd, int64_t pos0,
                            bool interleaved, bool inverse, InvFreq<F> f) {
  const int64_t half = hd / 2, total = T * half;
  for (int64_t e = gid(); e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e % half, t = e / half;
    F s, c;
    if constexpr (std::is_same_v<F, float>)
      sincosf(float(pos0 + t) * f.v[i], &s, &c);
    else
      sincos(double(pos0 + t) * f.v[i], &s, &c);
    if (inverse) s = -s;
    F* row = x + t * n_heads * hd;
    const int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    for (int64_t h = 0; h < n_heads; ++h) {
      F* v = row + h * hd;
      const F x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x1 * c + x0 * s;
    }
  }
}

template <class F>
void rope_launch(const Tensor& x, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
                 bool interleaved, bool inverse, const char* op) {
  const int64_t width = x.dim(-1), half = hd / 2, T = x.numel() / width;
  if (half > kMaxHalf) bad_args(op, "head_dim " + std::to_string(hd) + " above 512");
  // The frequencies as the CPU computes them (transformer_cpu.cpp), so the angles agree.
  InvFreq<F> f;
  for (int64_t i = 0; i < half; ++i) {
    if constexpr (std::is_same_v<F, float>)
      f.v[i] = 1.0f / std::pow(theta, float(2 * i) / float(hd));
    else
      f.v[i] = 1.0 / std::pow(double(theta), double(2 * i) / double(hd));
  }
  if (T == 0) return;
  rope_kernel<F><<<grid_for(T * half, 256), 256, 0, stream()>>>(x.data<F>(), T, n_heads, hd,
                                                                 pos0, interleaved, inverse, f);
  LRQ_CUDA_LAUNCHED();
}

// ------------------------------------------------------------------ SwiGLU, residual (F64)
__global__ void silu_mul_f64_kernel(const double* g, const double* u, double* o, int64_t n) {
  for (int64_t i = gid(); i < n; i += int64_t(gridDim.x) * blockDim.x)
    o[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
}

__global__ void add_f64_kernel(double* x, const double* y, int64_t n) {
  for (int64_t i = gid(); i < n; i += int64_t(gridDim.x) * blockDim.x) x[i] += y[i];
}

// Each element's three inputs are read before its two outputs are written (outputs may alias
// inputs; no __restrict__).
template <class F>
__global__ void silu_mul_backward_kernel(const F* g, const F* u, const F* go, F* dg, F* du,
                                         int64_t n) {
  for (int64_t i = gid(); i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const F a = g[i], b = u[i], e = go[i];
    const F sig = F(1) / (F(1) + dev_exp(-a));
    du[i] = e * (a * sig);
    dg[i] = e * b * sig * (F(1) + a * (F(1) - sig));
  }
}

// ------------------------------------------------------------------ attention (tiled)
constexpr int kAttnThreads = 256;

// Tiles of B query rows by B keys; HDM bounds head_dim (32, 64, 128, 256), the shared rows
// are hd + 1 wide (an odd stride: the threads of a warp read 32 different rows of K or V at one
// column without bank conflicts). Each thread owns R (row, column) entries of the output
// accumulators and SR entries of a score tile. Double at head_dim 256 takes 16-row tiles to
// stay within shared memory (~136 KB).
template <class F, int HDM>
struct AttnTile {
  static constexpr int B = (sizeof(F) == 8 && HDM == 256) ? 16 : 32;
  static constexpr int R = B * HDM / kAttnThreads;
  static constexpr int SR = B * B / kAttnThreads;
  static_assert(R >= 1 && SR >= 1 && B * HDM % kAttnThreads == 0 && B * B % kAttnThreads == 0);
  static constexpr int PLD = B + 1;  // score tiles: the row-wise softmax pass is conflict-free
};

// Rows r0..r0+B-1 of a matrix (row stride ld, columns 0..hd-1 from src) into S (stride ldS);
// rows at or past nrows read as zero.
template <class F, int B>
__device__ __forceinline__ void load_rows(F* S, int ldS, const F* src, int64_t ld, int64_t r0,
                                          int64_t nrows, int hd) {
  for (int e = threadIdx.x; e < B * hd; e += blockDim.x) {
    const int r = e / hd, c = e % hd;
    S[r * ldS + c] = r0 + r < nrows ? src[(r0 + r) * ld + c] : F(0);
  }
}

template <class F>
__device__ __forceinline__ F row_dot(const F* a, const F* b, int hd) {
  F s = 0;
  for (int c = 0; c < hd; ++c) s += a[c] * b[c];
  return s;
}

// The forward: out = softmax(scale q K^T, causal) V and lse per (head, row). Query row i sits at
// position pos0 + i and sees keys 0..pos0+i (pos0 > 0 only for the F64 inference op).
template <class F, int HDM>
__global__ void __launch_bounds__(kAttnThreads)
attn_fwd_kernel(const F* __restrict__ q, const F* __restrict__ K, const F* __restrict__ V,
                F* __restrict__ out, F* __restrict__ lse, int64_t T, int nh, int group, int hd,
                int64_t pos0, F scale) {
  using Tile = AttnTile<F, HDM>;
  constexpr int B = Tile::B, PLD = Tile::PLD;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  const int LD = hd + 1;
  F* Qs = reinterpret_cast<F*>(attn_smem);
  F* Ks = Qs + B * LD;
  F* Vs = Ks + B * LD;
  F* Ps = Vs + B * LD;
  F* m_s = Ps + B * PLD;
  F* l_s = m_s + B;
  F* corr_s = l_s + B;
  const int64_t i0 = int64_t(blockIdx.x) * B;
  const int h = blockIdx.y, g = h / group;
  const int64_t qw = int64_t(nh) * hd, kw = int64_t(nh / group) * hd;
  const int tid = threadIdx.x;
  const F neg_inf = -F(INFINITY);
  load_rows<F, B>(Qs, LD, q + h * hd, qw, i0, T, hd);
  if (tid < B) {
    m_s[tid] = neg_inf;
    l_s[tid] = 0;
  }
  F acc[Tile::R];
#pragma unroll
  for (int r = 0; r < Tile::R; ++r) acc[r] = 0;
  const int64_t last = pos0 + min(T, i0 + B) - 1;  // the last key a row of this tile sees
  for (int64_t j0 = 0; j0 <= last; j0 += B) {
    __syncthreads();  // the previous tile is consumed (first time: Qs, m_s, l_s are set)
    load_rows<F, B>(Ks, LD, K + g * hd, kw, j0, last + 1, hd);
    load_rows<F, B>(Vs, LD, V + g * hd, kw, j0, last + 1, hd);
    __syncthreads();
#pragma unroll
    for (int r = 0; r < Tile::SR; ++r) {
      const int e = tid + r * kAttnThreads, qi = e / B, kj = e % B;
      const int64_t i = i0 + qi, j = j0 + kj;
      Ps[qi * PLD + kj] =
          i < T && j <= pos0 + i ? scale * row_dot(Qs + qi * LD, Ks + kj * LD, hd) : neg_inf;
    }
    __syncthreads();
    if (tid < B) {  // the online softmax, one thread per row
      F* p = Ps + tid * PLD;
      F mx = neg_inf;
      for (int kj = 0; kj < B; ++kj) mx = dev_max(mx, p[kj]);
      const F m_old = m_s[tid], m_new = dev_max(m_old, mx);
      // A row past T sees no key: its max stays -inf and its weights 0.
      const bool none = m_new == neg_inf;
      const F corr = none ? F(1) : dev_exp(m_old - m_new);
      F sum = 0;
      for (int kj = 0; kj < B; ++kj) {
        const F e = none ? F(0) : dev_exp(p[kj] - m_new);
        p[kj] = e;
        sum += e;
      }
      m_s[tid] = m_new;
      l_s[tid] = l_s[tid] * corr + sum;
      corr_s[tid] = corr;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < Tile::R; ++r) {
      const int e = tid + r * kAttnThreads, qi = e / HDM, c = e % HDM;
      if (c >= hd) continue;
      F a = acc[r] * corr_s[qi];
      const F* p = Ps + qi * PLD;
      for (int kj = 0; kj < B; ++kj) a += p[kj] * Vs[kj * LD + c];
      acc[r] = a;
    }
  }
  // m_s and l_s were last written before the loop's final barrier.
#pragma unroll
  for (int r = 0; r < Tile::R; ++r) {
    const int e = tid + r * kAttnThreads, qi = e / HDM, c = e % HDM;
    const int64_t i = i0 + qi;
    if (c < hd && i < T) out[i * qw + h * hd + c] = acc[r] / l_s[qi];
  }
  if (lse && tid < B && i0 + tid < T) lse[int64_t(h) * T + i0 + tid] = m_s[tid] + dev_log(l_s[tid]);
}

// D[h, t] = dO_t . O_t for head h (in double), one warp per (row, head).
template <class F>
__global__ void attn_rowdot_kernel(const F* __restrict__ out, const F* __restrict__ dout,
                                   F* __restrict__ D, int64_t T, int nh, int hd) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t w = gid() / 32; w < T * nh; w += warps) {  // uniform across a warp
    const int64_t t = w / nh, h = w % nh;
    const F *o = out + t * nh * hd + h * hd, *g = dout + t * nh * hd + h * hd;
    double s = 0;
    for (int c = lane; c < hd; c += 32) s += double(g[c]) * double(o[c]);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) D[h * T + t] = F(s);
  }
}

// The score tile's gradient pieces for query rows i0.. and keys j0.. (causal from position 0):
// P = exp(scale q.k - lse) and dS = P (dO.v - D); zero where the key is after the query or
// the row is past T.
template <class F, int B>
__device__ __forceinline__ void score_grads(const F* Qs, const F* dOs, const F* Ks, const F* Vs,
                                            const F* lse_s, const F* D_s, int LD, int64_t i0,
                                            int64_t j0, int64_t T, F scale, int e, F* p_out,
                                            F* ds_out) {
  const int qi = e / B, kj = e % B;
  const int64_t i = i0 + qi, j = j0 + kj;
  F p = 0, ds = 0;
  if (i < T && j <= i) {
    const F s = row_dot(Qs + qi * LD, Ks + kj * LD, LD - 1);
    const F dp = row_dot(dOs + qi * LD, Vs + kj * LD, LD - 1);
    p = dev_exp(scale * s - lse_s[qi]);
    ds = p * (dp - D_s[qi]);
  }
  *p_out = p;
  *ds_out = ds;
}

// dK and dV for one tile of keys of one KV head: every query tile at or after it, of every
// query head of the group, in a fixed order; accumulated in registers, written once.
template <class F, int HDM>
__global__ void __launch_bounds__(kAttnThreads)
attn_dkdv_kernel(const F* __restrict__ q, const F* __restrict__ K, const F* __restrict__ V,
                 const F* __restrict__ dout, const F* __restrict__ lse, const F* __restrict__ D,
                 F* __restrict__ dK, F* __restrict__ dV, int64_t T, int nh, int group, int hd,
                 F scale) {
  using Tile = AttnTile<F, HDM>;
  constexpr int B = Tile::B, PLD = Tile::PLD;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  const int LD = hd + 1;
  F* Ks = reinterpret_cast<F*>(attn_smem);
  F* Vs = Ks + B * LD;
  F* Qs = Vs + B * LD;
  F* dOs = Qs + B * LD;
  F* Ps = dOs + B * LD;
  F* dSs = Ps + B * PLD;
  F* lse_s = dSs + B * PLD;
  F* D_s = lse_s + B;
  const int64_t j0 = int64_t(blockIdx.x) * B;
  const int g = blockIdx.y, tid = threadIdx.x;
  const int64_t qw = int64_t(nh) * hd, kw = int64_t(nh / group) * hd;
  load_rows<F, B>(Ks, LD, K + g * hd, kw, j0, T, hd);
  load_rows<F, B>(Vs, LD, V + g * hd, kw, j0, T, hd);
  F dk[Tile::R], dv[Tile::R];
#pragma unroll
  for (int r = 0; r < Tile::R; ++r) dk[r] = dv[r] = 0;
  for (int hh = 0; hh < group; ++hh) {
    const int h = g * group + hh;
    for (int64_t i0 = j0; i0 < T; i0 += B) {  // query tiles that see a key of this tile
      __syncthreads();  // the previous tile is consumed (first time: Ks, Vs are loaded)
      load_rows<F, B>(Qs, LD, q + h * hd, qw, i0, T, hd);
      load_rows<F, B>(dOs, LD, dout + h * hd, qw, i0, T, hd);
      if (tid < B) {
        const bool in = i0 + tid < T;
        lse_s[tid] = in ? lse[int64_t(h) * T + i0 + tid] : F(0);
        D_s[tid] = in ? D[int64_t(h) * T + i0 + tid] : F(0);
      }
      __syncthreads();
#pragma unroll
      for (int r = 0; r < Tile::SR; ++r) {
        const int e = tid + r * kAttnThreads;
        F p, ds;
        score_grads<F, B>(Qs, dOs, Ks, Vs, lse_s, D_s, LD, i0, j0, T, scale, e, &p, &ds);
        Ps[(e / B) * PLD + e % B] = p;
        dSs[(e / B) * PLD + e % B] = ds;
      }
      __syncthreads();
      // dV += P^T dO, dK += dS^T Q (scaled at the end).
#pragma unroll
      for (int r = 0; r < Tile::R; ++r) {
        const int e = tid + r * kAttnThreads, kj = e / HDM, c = e % HDM;
        if (c >= hd) continue;
        F a = dv[r], b = dk[r];
        for (int qi = 0; qi < B; ++qi) {
          a += Ps[qi * PLD + kj] * dOs[qi * LD + c];
          b += dSs[qi * PLD + kj] * Qs[qi * LD + c];
        }
        dv[r] = a;
        dk[r] = b;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < Tile::R; ++r) {
    const int e = tid + r * kAttnThreads, kj = e / HDM, c = e % HDM;
    const int64_t j = j0 + kj;
    if (c < hd && j < T) {
      dK[j * kw + g * hd + c] = scale * dk[r];
      dV[j * kw + g * hd + c] = dv[r];
    }
  }
}

// dQ for one tile of queries of one head: every key tile up to its causal limit.
template <class F, int HDM>
__global__ void __launch_bounds__(kAttnThreads)
attn_dq_kernel(const F* __restrict__ q, const F* __restrict__ K, const F* __restrict__ V,
               const F* __restrict__ dout, const F* __restrict__ lse, const F* __restrict__ D,
               F* __restrict__ dq, int64_t T, int nh, int group, int hd, F scale) {
  using Tile = AttnTile<F, HDM>;
  constexpr int B = Tile::B, PLD = Tile::PLD;
  extern __shared__ __align__(16) unsigned char attn_smem[];
  const int LD = hd + 1;
  F* Qs = reinterpret_cast<F*>(attn_smem);
  F* dOs = Qs + B * LD;
  F* Ks = dOs + B * LD;
  F* Vs = Ks + B * LD;
  F* dSs = Vs + B * LD;
  F* lse_s = dSs + B * PLD;
  F* D_s = lse_s + B;
  const int64_t i0 = int64_t(blockIdx.x) * B;
  const int h = blockIdx.y, g = h / group, tid = threadIdx.x;
  const int64_t qw = int64_t(nh) * hd, kw = int64_t(nh / group) * hd;
  load_rows<F, B>(Qs, LD, q + h * hd, qw, i0, T, hd);
  load_rows<F, B>(dOs, LD, dout + h * hd, qw, i0, T, hd);
  if (tid < B) {
    const bool in = i0 + tid < T;
    lse_s[tid] = in ? lse[int64_t(h) * T + i0 + tid] : F(0);
    D_s[tid] = in ? D[int64_t(h) * T + i0 + tid] : F(0);
  }
  F acc[Tile::R];
#pragma unroll
  for (int r = 0; r < Tile::R; ++r) acc[r] = 0;
  const int64_t last = min(T, i0 + B) - 1;
  for (int64_t j0 = 0; j0 <= last; j0 += B) {
    __syncthreads();  // the previous tile is consumed (first time: Qs, dOs, lse_s, D_s are set)
    load_rows<F, B>(Ks, LD, K + g * hd, kw, j0, T, hd);
    load_rows<F, B>(Vs, LD, V + g * hd, kw, j0, T, hd);
    __syncthreads();
#pragma unroll
    for (int r = 0; r < Tile::SR; ++r) {
      const int e = tid + r * kAttnThreads;
      F p, ds;
      score_grads<F, B>(Qs, dOs, Ks, Vs, lse_s, D_s, LD, i0, j0, T, scale, e, &p, &ds);
      dSs[(e / B) * PLD + e % B] = ds;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < Tile::R; ++r) {
      const int e = tid + r * kAttnThreads, qi = e / HDM, c = e % HDM;
      if (c >= hd) continue;
      F a = acc[r];
      const F* ds = dSs + qi * PLD;
      for (int kj = 0; kj < B; ++kj) a += ds[kj] * Ks[kj * LD + c];
      acc[r] = a;
    }
  }
#pragma unroll
  for (int r = 0; r < Tile::R; ++r) {
    const int e = tid + r * kAttnThreads, qi = e / HDM, c = e % HDM;
    const int64_t i = i0 + qi;
    if (c < hd && i < T) dq[i * qw + h * hd + c] = scale * acc[r];
  }
}

// Shared memory of each kernel, in elements of F, for rows hd + 1 wide.
template <class F, int HDM>
constexpr int64_t fwd_smem(int64_t hd) {
  using Tile = AttnTile<F, HDM>;
  return 3 * Tile::B * (hd + 1) + Tile::B * Tile::PLD + 3 * Tile::B;
}
template <class F, int HDM>
constexpr int64_t dkdv_smem(int64_t hd) {
  using Tile = AttnTile<F, HDM>;
  return 4 * Tile::B * (hd + 1) + 2 * Tile::B * Tile::PLD + 2 * Tile::B;
}
template <class F, int HDM>
constexpr int64_t dq_smem(int64_t hd) {
  using Tile = AttnTile<F, HDM>;
  return 4 * Tile::B * (hd + 1) + Tile::B * Tile::PLD + 2 * Tile::B;
}

// Calls fn(std::integral_constant<int, HDM>) for the smallest tile width that holds hd.
template <class Fn>
void with_head_tile(int64_t hd, const char* op, Fn&& fn) {
  if (hd <= 32) fn(std::integral_constant<int, 32>{});
  else if (hd <= 64) fn(std::integral_constant<int, 64>{});
  else if (hd <= 128) fn(std::integral_constant<int, 128>{});
  else if (hd <= 256) fn(std::integral_constant<int, 256>{});
  else bad_args(op, "head_dim " + std::to_string(hd) + " above 256");
}

void check_grid(int64_t T, int64_t heads, const char* op) {
  if (T > int64_t(INT_MAX) || heads > 65535)
    bad_args(op, std::to_string(T) + " rows of " + std::to_string(heads) + " heads exceed the grid");
}

template <class F>
F attn_scale(int64_t hd) {
  // As the CPU: 1/sqrt(d) computed in F.
  return F(1) / std::sqrt(F(hd));
}

template <class F>
void attention_forward(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                       int64_t hd, int64_t pos0, const Tensor& out, F* lse, const char* op) {
  const int64_t T = q.numel() / (nh * hd);
  if (T == 0) return;
  check_grid(T, nh, op);
  with_head_tile(hd, op, [&](auto tile) {
    constexpr int HDM = decltype(tile)::value;
    constexpr int B = AttnTile<F, HDM>::B;
    auto* kernel = attn_fwd_kernel<F, HDM>;
    static const bool granted =
        (allow_smem(kernel, size_t(fwd_smem<F, HDM>(HDM)) * sizeof(F)), true);
    (void)granted;
    const dim3 grid{unsigned((T + B - 1) / B), unsigned(nh)};
    kernel<<<grid, kAttnThreads, size_t(fwd_smem<F, HDM>(hd)) * sizeof(F), stream()>>>(
        q.data<F>(), K.data<F>(), V.data<F>(), out.data<F>(), lse, T, int(nh), int(nh / nkv),
        int(hd), pos0, attn_scale<F>(hd));
    LRQ_CUDA_LAUNCHED();
  });
}

template <class F>
void attention_backward_t(const Tensor& q, const Tensor& K, const Tensor& V, const Tensor& out,
                          const Tensor& lse, const Tensor& dout, int64_t nh, int64_t nkv,
                          int64_t hd, const Tensor& dq, const Tensor& dK, const Tensor& dV) {
  const char* op = "attention_backward";
  const int64_t T = q.dim(0);
  if (T == 0) return;
  check_grid(T, nh, op);
  DeviceScratch Dbuf(size_t(nh * T) * sizeof(F));
  F* D = Dbuf.as<F>();
  const int64_t warps = T * nh;
  attn_rowdot_kernel<F><<<grid_for(warps * 32, 256), 256, 0, stream()>>>(
      out.data<F>(), dout.data<F>(), D, T, int(nh), int(hd));
  LRQ_CUDA_LAUNCHED();
  with_head_tile(hd, op, [&](auto tile) {
    constexpr int HDM = decltype(tile)::value;
    constexpr int B = AttnTile<F, HDM>::B;
    auto* kv_kernel = attn_dkdv_kernel<F, HDM>;
    auto* q_kernel = attn_dq_kernel<F, HDM>;
    static const bool granted =
        (allow_smem(kv_kernel, size_t(dkdv_smem<F, HDM>(HDM)) * sizeof(F)),
         allow_smem(q_kernel, size_t(dq_smem<F, HDM>(HDM)) * sizeof(F)), true);
    (void)granted;
    const unsigned tiles = unsigned((T + B - 1) / B);
    const F scale = attn_scale<F>(hd);
    kv_kernel<<<dim3{tiles, unsigned(nkv)}, kAttnThreads, size_t(dkdv_smem<F, HDM>(hd)) * sizeof(F),
                stream()>>>(q.data<F>(), K.data<F>(), V.data<F>(), dout.data<F>(), lse.data<F>(),
                            D, dK.data<F>(), dV.data<F>(), T, int(nh), int(nh / nkv), int(hd),
                            scale);
    LRQ_CUDA_LAUNCHED();
    q_kernel<<<dim3{tiles, unsigned(nh)}, kAttnThreads, size_t(dq_smem<F, HDM>(hd)) * sizeof(F),
               stream()>>>(q.data<F>(), K.data<F>(), V.data<F>(), dout.data<F>(), lse.data<F>(),
                           D, dq.data<F>(), T, int(nh), int(nh / nkv), int(hd), scale);
    LRQ_CUDA_LAUNCHED();
  });
}

template <class F>
void rmsnorm_backward_t(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                        const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_backward";
  const int64_t d = x.dim(-1), T = x.numel() / d;
  if (T == 0) return;
  if (T > INT_MAX) bad_args(op, "too many rows in " + x.str());
  const Stored wk = stored_kind(w, op);
  DeviceScratch rows(2 * size_t(T) * sizeof(double));
  double *inv = rows.as<double>(), *c = inv + T;
  rmsnorm_rows_kernel<F><<<unsigned(T), 256, 0, stream()>>>(x.data<F>(), w.raw(), wk, eps,
                                                            dy.data<F>(), d, inv, c);
  LRQ_CUDA_LAUNCHED();
  if (dw.defined()) {
    // Chunks of 64 rows (more when there would be more than 65535 chunks: the grid's y limit).
    const int64_t rows_per = std::max<int64_t>(64, (T + 65534) / 65535);
    const int64_t chunks = (T + rows_per - 1) / rows_per;
    DeviceScratch part(size_t(chunks * d) * sizeof(double));
    const unsigned col_blocks = unsigned((d + 255) / 256);
    rmsnorm_dw_partial_kernel<F><<<dim3{col_blocks, unsigned(chunks)}, 256, 0, stream()>>>(
        x.data<F>(), dy.data<F>(), inv, T, d, rows_per, part.as<double>());
    LRQ_CUDA_LAUNCHED();
    rmsnorm_dw_sum_kernel<F><<<col_blocks, 256, 0, stream()>>>(part.as<double>(), chunks, d,
                                                               dw.data<F>());
    LRQ_CUDA_LAUNCHED();
  }
  const int64_t n = x.numel();
  rmsnorm_dx_kernel<F><<<grid_for(n, 256), 256, 0, stream()>>>(x.data<F>(), w.raw(), wk,
                                                              dy.data<F>(), inv, c, d, n,
                                                              dx.data<F>());
  LRQ_CUDA_LAUNCHED();
}

template <class F>
void silu_mul_backward_t(const Tensor& gate, const Tensor& up, const Tensor& dout,
                         const Tensor& dgate, const Tensor& dup) {
  const int64_t n = gate.numel();
  if (n == 0) return;
  silu_mul_backward_kernel<F><<<grid_for(n, 256), 256, 0, stream()>>>(
      gate.data<F>(), up.data<F>(), dout.data<F>(), dgate.data<F>(), dup.data<F>(), n);
  LRQ_CUDA_LAUNCHED();
}

}  // namespace

// ------------------------------------------------------------------ the F64 forward forms
void rmsnorm_f64(const Tensor& x, const Tensor& w, float eps, const Tensor& out) {
  const int64_t d = x.dim(-1), T = x.numel() / d;
  if (T == 0) return;
  if (T > INT_MAX) bad_args("rmsnorm", "too many rows in " + x.str());
  rmsnorm_f64_kernel<<<unsigned(T), 256, 0, stream()>>>(x.data<double>(), w.raw(),
                                                        stored_kind(w, "rmsnorm"), eps,
                                                        out.data<double>(), d);
  LRQ_CUDA_LAUNCHED();
}

void rope_f64(const Tensor& x, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
              bool interleaved) {
  rope_launch<double>(x, n_heads, hd, pos0, theta, interleaved, false, "rope");
}

void attention_f64(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                   int64_t hd, int64_t pos0, const Tensor& out) {
  attention_forward<double>(q, K, V, nh, nkv, hd, pos0, out, nullptr, "attention");
}

void silu_mul_f64(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const int64_t n = gate.numel();
  if (n == 0) return;
  silu_mul_f64_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(gate.data<double>(),
                                                              up.data<double>(),
                                                              out.data<double>(), n);
  LRQ_CUDA_LAUNCHED();
}

void add_inplace_f64(const Tensor& x, const Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  add_f64_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(x.data<double>(), y.data<double>(), n);
  LRQ_CUDA_LAUNCHED();
}

// ------------------------------------------------------------------ the ops
void attention_train(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                     int64_t hd, const Tensor& out, const Tensor& lse) {
  if (q.dtype() == DType::F64)
    attention_forward<double>(q, K, V, nh, nkv, hd, 0, out, lse.data<double>(), "attention_train");
  else
    attention_forward<float>(q, K, V, nh, nkv, hd, 0, out, lse.data<float>(), "attention_train");
}

void attention_backward(const Tensor& q, const Tensor& K, const Tensor& V, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, int64_t nh, int64_t nkv,
                        int64_t hd, const Tensor& dq, const Tensor& dK, const Tensor& dV) {
  if (q.dtype() == DType::F64)
    attention_backward_t<double>(q, K, V, out, lse, dout, nh, nkv, hd, dq, dK, dV);
  else
    attention_backward_t<float>(q, K, V, out, lse, dout, nh, nkv, hd, dq, dK, dV);
}

void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                      const Tensor& dx, const Tensor& dw) {
  if (x.dtype() == DType::F64) rmsnorm_backward_t<double>(x, w, eps, dy, dx, dw);
  else rmsnorm_backward_t<float>(x, w, eps, dy, dx, dw);
}

void rope_backward(const Tensor& dx, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
                   bool interleaved) {
  if (dx.dtype() == DType::F64)
    rope_launch<double>(dx, n_heads, hd, pos0, theta, interleaved, true, "rope_backward");
  else
    rope_launch<float>(dx, n_heads, hd, pos0, theta, interleaved, true, "rope_backward");
}

void silu_mul_backward(const Tensor& gate, const Tensor& up, const Tensor& dout,
                       const Tensor& dgate, const Tensor& dup) {
  if (gate.dtype() == DType::F64) silu_mul_backward_t<double>(gate, up, dout, dgate, dup);
  else silu_mul_backward_t<float>(gate, up, dout, dgate, dup);
}

}  // namespace lrq::cuda
