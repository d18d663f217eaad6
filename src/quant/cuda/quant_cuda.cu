// RTN and GPTQ on the GPU (algorithms in quant/kernels/rtn_grid.h and gptq_solver.h; layouts as
// in gptq_solver.cpp).
//
// Like the CPU path, GPTQ works on Wt = W^T [n, rows], so thread r of a warp reads element r
// of a column and every access to a column is coalesced. One CTA of kRowsPerCta threads owns
// kRowsPerCta output rows for one lazy block: it caches the block's U tile and its rows'
// block weights in shared memory, and each thread runs the block's columns in order for its
// own row (GPTQ never couples two rows, so no thread waits on another after the loads). The
// trailing update W[:, b1:] -= E^T U[b0:b1, b1:] is one cuBLAS GEMM per block.
//
// Grids are computed with the rounding intrinsics (__fmul_rn, __fdiv_rn, ...) so nvcc cannot
// fuse a multiply and an add: the CPU build does not contract either, so scales, offsets and
// codes come out bit-identical for identical weights. Only GPTQ's error propagation (FMA here,
// two roundings on the CPU) and the GEMM's summation order differ, which flips a code now and
// then where a weight sits on a rounding boundary.
#include "quant/cuda/quant_cuda.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/ops.h"

namespace lrq::quant_cuda {
namespace {

using cuda::grid_for;
using cuda::stream;

constexpr float kMinScale = 6.103515625e-05f;  // 2^-14, as in rtn_grid.cpp
constexpr int kTile = 128;                     // widest lazy block the shared tile holds
constexpr int kRowsPerCta = 32;                // one warp; Ws rows are 32 floats: no bank conflicts
constexpr int kThreads = 256;

struct Grid {
  int bits;
  int sym;
  int clip;
  float clip_min;
  int clip_steps;
  float maxq;
};

Grid grid_of(const RtnOptions& o) {
  return {o.bits, o.symmetric ? 1 : 0, o.clip_search ? 1 : 0, o.clip_min, o.clip_steps,
          float((1 << o.bits) - 1)};
}

// std::min / std::max / std::clamp exactly (which operand wins on ties and signed zeros).
__device__ __forceinline__ float std_min(float a, float b) { return b < a ? b : a; }
__device__ __forceinline__ float std_max(float a, float b) { return a < b ? b : a; }
__device__ __forceinline__ float f16_round(float x) { return __half2float(__float2half_rn(x)); }

__device__ __forceinline__ float qcode(float w, float s, float o, float maxq) {
  float q = rintf(__fdiv_rn(__fsub_rn(w, o), s));
  q = q > 0.f ? q : 0.f;  // NaN -> 0
  return q < maxq ? q : maxq;
}
__device__ __forceinline__ float dq(float c, float s, float o) {
  return __fadd_rn(__fmul_rn(c, s), o);
}

__device__ void minmax_grid_d(float lo, float hi, const Grid& p, float shrink, float* s,
                              float* o) {
  const float m = float(1 << (p.bits - 1));
  if (p.sym) {
    const float amax = __fmul_rn(std_max(fabsf(lo), fabsf(hi)), shrink);
    const float sc = std_max(f16_round(__fdiv_rn(amax, m - 1.f)), kMinScale);
    *s = sc;
    *o = __fmul_rn(-m, sc);
    return;
  }
  lo = __fmul_rn(std_min(lo, 0.f), shrink);
  hi = __fmul_rn(std_max(hi, 0.f), shrink);
  const float sc = std_max(f16_round(__fdiv_rn(__fsub_rn(hi, lo), p.maxq)), kMinScale);
  float z = rintf(__fdiv_rn(-lo, sc));
  z = z < 0.f ? 0.f : (p.maxq < z ? p.maxq : z);
  *s = sc;
  *o = f16_round(__fmul_rn(-z, sc));
}

// fit_grids of rtn_grid.cpp for one slice: values load(k), k < n, weighed by imp[k] (null: 1).
template <class Load>
__device__ void fit_grid_d(const Load& load, int64_t n, const float* imp, const Grid& p,
                           float* s_out, float* o_out) {
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t k = 0; k < n; ++k) {
    const float v = load(k);
    lo = std_min(lo, v);
    hi = std_max(hi, v);
  }
  float s, o;
  minmax_grid_d(lo, hi, p, 1.f, &s, &o);
  if (p.clip) {
    auto weighted_error = [&](float cs, float co) {
      double e = 0;
      for (int64_t k = 0; k < n; ++k) {
        const float v = load(k);
        const double d = double(__fsub_rn(v, dq(qcode(v, cs, co, p.maxq), cs, co)));
        const double im = imp ? double(imp[k]) : 1.0;
        e = __dadd_rn(e, __dmul_rn(__dmul_rn(im, d), d));
      }
      return e;
    };
    double best = weighted_error(s, o);
    for (int step = 1; step <= p.clip_steps; ++step) {
      const float c = __fsub_rn(
          1.f, __fdiv_rn(__fmul_rn(float(step), __fsub_rn(1.f, p.clip_min)), float(p.clip_steps)));
      float cs, co;
      minmax_grid_d(lo, hi, p, c, &cs, &co);
      const double e = weighted_error(cs, co);
      if (e < best) {
        best = e;
        s = cs;
        o = co;
      }
    }
  }
  *s_out = s;
  *o_out = o;
}

// One thread per (row r, group blockIdx.y) of wt [cols, rows]: the group's grid into
// S/O [ngroups, rows] and, if codes_t is given, its codes into codes_t [cols, rows].
__global__ void fit_groups_kernel(const float* __restrict__ wt, int64_t rows, int64_t g,
                                  const float* __restrict__ imp, Grid p, float* __restrict__ S,
                                  float* __restrict__ O, uint8_t* __restrict__ codes_t) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t gi = blockIdx.y;
  if (r >= rows) return;
  const float* base = wt + gi * g * rows + r;
  auto load = [&](int64_t k) { return base[k * rows]; };
  float s, o;
  fit_grid_d(load, g, imp + gi * g, p, &s, &o);
  S[gi * rows + r] = s;
  O[gi * rows + r] = o;
  if (codes_t)
    for (int64_t k = 0; k < g; ++k)
      codes_t[(gi * g + k) * rows + r] = uint8_t(qcode(base[k * rows], s, o, p.maxq));
}

// out [rows, n] (row-major codes) from ct [n, rows]: out[r, c] = ct[src[c], r] (src null:
// identity). 32 x 32 tiles through shared memory so both sides stay coalesced.
__global__ void codes_to_rows_kernel(const uint8_t* __restrict__ ct, int64_t n, int64_t rows,
                                     const int32_t* __restrict__ src, uint8_t* __restrict__ out) {
  __shared__ uint8_t tile[32][33];
  const int64_t r0 = int64_t(blockIdx.x) * 32, c0 = int64_t(blockIdx.y) * 32;
  for (int cc = threadIdx.y; cc < 32; cc += blockDim.y) {
    const int64_t c = c0 + cc, r = r0 + threadIdx.x;
    if (c < n && r < rows) tile[cc][threadIdx.x] = ct[int64_t(src ? src[c] : c) * rows + r];
  }
  __syncthreads();
  for (int rr = threadIdx.y; rr < 32; rr += blockDim.y) {
    const int64_t r = r0 + rr, c = c0 + threadIdx.x;
    if (c < n && r < rows) out[r * n + c] = tile[threadIdx.x][rr];
  }
}

// dst[i, :] = dead[idx[i]] ? 0 : src[idx[i], :] for [n, rows] matrices.
__global__ void gather_rows_kernel(const float* __restrict__ src, float* __restrict__ dst,
                                   int64_t rows, int64_t n, const int32_t* __restrict__ idx,
                                   const uint8_t* __restrict__ dead) {
  const int64_t total = n * rows;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / rows, r = e - i * rows;
    const int64_t c = idx[i];
    dst[e] = dead[c] ? 0.f : src[c * rows + r];
  }
}

__global__ void diagonal_kernel(const void* h, int is_f64, int64_t n, double* d) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    d[i] = is_f64 ? static_cast<const double*>(h)[i * n + i]
                  : double(static_cast<const float*>(h)[i * n + i]);
}

// A = J P^T H P J (J the reversal) with the diagonal replaced: A[i, j] = H'[n-1-i, n-1-j],
// H'[a, b] = H[perm[a], perm[b]], H'[a, a] = diag[perm[a]] + add.
template <class T>
__global__ void build_reversed_kernel(const T* __restrict__ h, int64_t n,
                                      const int32_t* __restrict__ perm,
                                      const double* __restrict__ diag, double add,
                                      double* __restrict__ a) {
  const int64_t total = n * n;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / n, j = e - i * n;
    const int64_t pa = perm[n - 1 - i], pb = perm[n - 1 - j];
    a[e] = i == j ? diag[pa] + add : double(h[pa * n + pb]);
  }
}

__global__ void identity_kernel(double* x, int64_t n) {
  const int64_t total = n * n;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    x[e] = (e / n == e % n) ? 1.0 : 0.0;
}

// U[i, j] = X[n-1-i, n-1-j] for j >= i, 0 below: X = L'^-1 lower, U = J X J upper.
__global__ void unreverse_upper_kernel(const double* __restrict__ x, int64_t n,
                                       float* __restrict__ u) {
  const int64_t total = n * n;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / n, j = e - i * n;
    u[e] = j >= i ? float(x[(n - 1 - i) * n + (n - 1 - j)]) : 0.f;
  }
}

struct BlockArgs {
  float* wt;              // [n, rows] working weights, processing order
  const float* U;         // [n, n]
  const float* imp;       // [n] diag(H) in processing order (clip-search weights)
  const int32_t* perm;    // [n] input column of processing column i
  float* S;               // [ngroups, rows]
  float* O;
  uint8_t* codes_t;       // [n, rows] processing order
  float* E;               // [block, rows] scaled errors of this block
  double* loss;           // [rows]
  int64_t rows, n, b0, b1, g;
  int static_groups;
  Grid p;
};

// One lazy block [b0, b1) for kRowsPerCta rows. Shared: Us [Bn, Bn] then Ws [Bn, kRowsPerCta].
__global__ void __launch_bounds__(kRowsPerCta) gptq_block_kernel(BlockArgs a) {
  extern __shared__ float smem[];
  const int Bn = int(a.b1 - a.b0);
  float* Us = smem;
  float* Ws = smem + Bn * Bn;
  const int tid = threadIdx.x;
  const int64_t r = int64_t(blockIdx.x) * kRowsPerCta + tid;
  const bool valid = r < a.rows;
#pragma unroll 8
  for (int idx = tid; idx < Bn * Bn; idx += kRowsPerCta) {
    const int i = idx / Bn, j = idx - i * Bn;
    Us[idx] = a.U[(a.b0 + i) * a.n + a.b0 + j];
  }
  if (valid)
    for (int k = 0; k < Bn; ++k) Ws[k * kRowsPerCta + tid] = a.wt[(a.b0 + k) * a.rows + r];
  __syncthreads();
  if (!valid) return;

  double l = 0;
  for (int i = 0; i < Bn; ++i) {
    const int64_t col = a.b0 + i;
    if (!a.static_groups && col % a.g == 0) {
      // The group's later columns: in this block from the tile (in-block updates so far),
      // beyond it from global memory (earlier blocks' lazy updates), as on the CPU.
      auto load = [&](int64_t k) {
        const int64_t c = col + k;
        return c < a.b1 ? Ws[(c - a.b0) * kRowsPerCta + tid] : a.wt[c * a.rows + r];
      };
      const int64_t gi = col / a.g;
      fit_grid_d(load, a.g, a.imp + col, a.p, &a.S[gi * a.rows + r], &a.O[gi * a.rows + r]);
    }
    const int64_t gi = a.static_groups ? a.perm[col] / a.g : col / a.g;
    const float s = a.S[gi * a.rows + r], o = a.O[gi * a.rows + r];
    const float w = Ws[i * kRowsPerCta + tid];
    const float q = qcode(w, s, o, a.p.maxq);
    const float diff = __fsub_rn(w, dq(q, s, o));
    const float d = Us[i * Bn + i];
    const float e = __fdiv_rn(diff, d);
    a.codes_t[col * a.rows + r] = uint8_t(q);
    a.E[int64_t(i) * a.rows + r] = e;
    l += double(diff) * double(diff) / (2.0 * double(d) * double(d));
    const float* ui = Us + i * Bn;
#pragma unroll 8
    for (int j = i + 1; j < Bn; ++j)
      Ws[j * kRowsPerCta + tid] = fmaf(-e, ui[j], Ws[j * kRowsPerCta + tid]);
  }
  a.loss[r] += l;
}

template <class T>
Tensor to_device(const std::vector<T>& v, DType t) {
  Tensor h = Tensor::empty({int64_t(v.size())}, t);
  std::copy(v.begin(), v.end(), h.data<T>());
  return h.to(Device::CUDA);
}

std::vector<int32_t> identity_perm(int64_t n) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  return p;
}

// f32_to_f16 of core/dtype.h on the device: cvt.rn is the same round-to-nearest-even, with the
// same overflow to inf (from 65520 on) and the same gradual underflow to subnormals and signed
// zero; only its NaN differs (canonical 0x7FFF), so NaN is spelled as the host spells it (sign |
// 0x7E00) and the stored bits match whatever the grids hold.
__device__ __forceinline__ uint16_t f16_bits(float x) {
  if (isnan(x)) return uint16_t((__float_as_uint(x) >> 16 & 0x8000u) | 0x7E00u);
  return __half_as_ushort(__float2half_rn(x));
}

// Grids S/O [ng, rows] (F32) -> scales/offsets [rows, ng] (F16); o16 null: no offsets.
__global__ void grids_to_f16_kernel(const float* __restrict__ S, const float* __restrict__ O,
                                    int64_t ng, int64_t rows, uint16_t* __restrict__ s16,
                                    uint16_t* __restrict__ o16) {
  const int64_t total = ng * rows;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t gi = e / rows, r = e - gi * rows;  // reads coalesced, writes strided by ng
    s16[r * ng + gi] = f16_bits(S[e]);
    if (o16) o16[r * ng + gi] = f16_bits(O[e]);
  }
}

// Codes [n, rows] (processing order) and grids [ng, rows] -> a PackedWeight on the GPU in the
// layout of the CPU path, encoded there (PackedWeight::pack reads back only its checks).
// src: stored column c reads processing column src[c] (null: identity).
PackedWeight pack_on_device(const Tensor& codes_t, const Tensor& src, const Tensor& S,
                            const Tensor& O, int64_t rows, int64_t n, int64_t g,
                            const RtnOptions& opt) {
  const int64_t ng = n / g;
  Tensor codes = Tensor::empty({rows, n}, DType::U8, Device::CUDA);
  const dim3 tiles(unsigned((rows + 31) / 32), unsigned((n + 31) / 32));
  codes_to_rows_kernel<<<tiles, dim3(32, 8), 0, stream()>>>(
      codes_t.data<uint8_t>(), n, rows, src.defined() ? src.data<int32_t>() : nullptr,
      codes.data<uint8_t>());
  LRQ_CUDA_LAUNCHED();
  Tensor scales = Tensor::empty({rows, ng}, DType::F16, Device::CUDA);
  Tensor offsets = opt.symmetric ? Tensor() : Tensor::empty({rows, ng}, DType::F16, Device::CUDA);
  grids_to_f16_kernel<<<grid_for(ng * rows, kThreads), kThreads, 0, stream()>>>(
      S.data<float>(), O.data<float>(), ng, rows, scales.data<uint16_t>(),
      opt.symmetric ? nullptr : offsets.data<uint16_t>());
  LRQ_CUDA_LAUNCHED();
  return PackedWeight::pack(codes, scales, offsets, Tensor(), opt.bits, g,
                            opt.symmetric ? QuantFormat::Symmetric : QuantFormat::Affine);
}

void check_groups(int64_t ng, const char* where) {
  if (ng > 65535)
    fail_msg(where, std::to_string(ng) + " groups per row exceed the GPU grid limit of 65535");
}

}  // namespace

std::vector<double> diagonal(const Tensor& H) {
  const int64_t n = H.dim(0);
  Tensor d = Tensor::empty({n}, DType::F64, Device::CUDA);
  diagonal_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
      H.raw(), H.dtype() == DType::F64 ? 1 : 0, n, d.data<double>());
  LRQ_CUDA_LAUNCHED();
  const Tensor h = d.to(Device::CPU);
  return std::vector<double>(h.data<double>(), h.data<double>() + n);
}

bool inverse_cholesky_upper(const Tensor& H, const std::vector<int32_t>& perm,
                            const std::vector<double>& diag, double add, Tensor* U) {
  const int64_t n = H.dim(0);
  const Tensor perm_d = to_device(perm, DType::I32), diag_d = to_device(diag, DType::F64);
  Tensor A = Tensor::empty({n, n}, DType::F64, Device::CUDA);
  const unsigned blocks = grid_for(n * n, kThreads);
  if (H.dtype() == DType::F64)
    build_reversed_kernel<double><<<blocks, kThreads, 0, stream()>>>(
        H.data<double>(), n, perm_d.data<int32_t>(), diag_d.data<double>(), add, A.data<double>());
  else
    build_reversed_kernel<float><<<blocks, kThreads, 0, stream()>>>(
        H.data<float>(), n, perm_d.data<int32_t>(), diag_d.data<double>(), add, A.data<double>());
  LRQ_CUDA_LAUNCHED();
  // chol(J A' J) = L' gives A' = V V^T with V = J L' J upper, so A'^-1 = U^T U for U = V^-1 =
  // J L'^-1 J: one factorization and one triangular solve instead of potrf + potri + potrf.
  if (!ops::cholesky(A)) return false;
  Tensor X = Tensor::empty({n, n}, DType::F64, Device::CUDA);
  identity_kernel<<<blocks, kThreads, 0, stream()>>>(X.data<double>(), n);
  LRQ_CUDA_LAUNCHED();
  ops::trsm_lower(A, false, X);
  Tensor u = Tensor::empty({n, n}, DType::F32, Device::CUDA);
  unreverse_upper_kernel<<<blocks, kThreads, 0, stream()>>>(X.data<double>(), n, u.data<float>());
  LRQ_CUDA_LAUNCHED();
  *U = u;
  return true;
}

PackedWeight rtn(const Tensor& W, const RtnOptions& opt, int64_t g, const std::vector<float>& imp) {
  const int64_t rows = W.dim(0), cols = W.dim(1), ng = cols / g;
  check_groups(ng, "rtn");
  Tensor Wt = Tensor::empty({cols, rows}, DType::F32, Device::CUDA);
  ops::transpose(W, Wt);
  const Tensor imp_d = to_device(imp, DType::F32);
  Tensor S = Tensor::empty({ng, rows}, DType::F32, Device::CUDA);
  Tensor O = Tensor::empty({ng, rows}, DType::F32, Device::CUDA);
  Tensor codes_t = Tensor::empty({cols, rows}, DType::U8, Device::CUDA);
  const dim3 blocks(unsigned((rows + 127) / 128), unsigned(ng));
  fit_groups_kernel<<<blocks, 128, 0, stream()>>>(Wt.data<float>(), rows, g, imp_d.data<float>(),
                                                  grid_of(opt), S.data<float>(), O.data<float>(),
                                                  codes_t.data<uint8_t>());
  LRQ_CUDA_LAUNCHED();
  return pack_on_device(codes_t, Tensor(), S, O, rows, cols, g, opt);
}

GptqResult gptq(const Tensor& W, const GptqFactor& f, const GptqOptions& opt, int64_t g) {
  const int64_t rows = W.dim(0), n = W.dim(1), ng = n / g;
  check_groups(ng, "gptq");
  const Grid p = grid_of(opt.grid);
  const size_t N = size_t(n);

  std::vector<uint8_t> dead(N);
  std::vector<float> imp_in(N), imp_proc(N);
  for (size_t i = 0; i < N; ++i) {
    dead[i] = f.dead[i] ? 1 : 0;
    imp_in[i] = float(f.diag[i]);
    imp_proc[i] = float(f.diag[size_t(f.perm[i])]);
  }
  const Tensor perm_d = to_device(f.perm, DType::I32), dead_d = to_device(dead, DType::U8);
  const Tensor imp_d = to_device(imp_proc, DType::F32);

  Tensor Wt = Tensor::empty({n, rows}, DType::F32, Device::CUDA);
  ops::transpose(W, Wt);
  Tensor S = Tensor::empty({ng, rows}, DType::F32, Device::CUDA);
  Tensor O = Tensor::empty({ng, rows}, DType::F32, Device::CUDA);
  const unsigned gather_blocks = grid_for(n * rows, kThreads);
  if (opt.static_groups) {  // grids of the original (dead-zeroed) columns, before the loop
    const Tensor id_d = to_device(identity_perm(n), DType::I32);
    const Tensor imp_in_d = to_device(imp_in, DType::F32);
    Tensor Wz = Tensor::empty({n, rows}, DType::F32, Device::CUDA);
    gather_rows_kernel<<<gather_blocks, kThreads, 0, stream()>>>(
        Wt.data<float>(), Wz.data<float>(), rows, n, id_d.data<int32_t>(), dead_d.data<uint8_t>());
    LRQ_CUDA_LAUNCHED();
    const dim3 blocks(unsigned((rows + 127) / 128), unsigned(ng));
    fit_groups_kernel<<<blocks, 128, 0, stream()>>>(Wz.data<float>(), rows, g,
                                                    imp_in_d.data<float>(), p, S.data<float>(),
                                                    O.data<float>(), nullptr);
    LRQ_CUDA_LAUNCHED();
  }
  Tensor Wp = Tensor::empty({n, rows}, DType::F32, Device::CUDA);
  gather_rows_kernel<<<gather_blocks, kThreads, 0, stream()>>>(
      Wt.data<float>(), Wp.data<float>(), rows, n, perm_d.data<int32_t>(), dead_d.data<uint8_t>());
  LRQ_CUDA_LAUNCHED();
  Wt = Tensor();  // the input-order copy is no longer needed

  // The lazy block is only a batching choice: the result does not depend on it except where a
  // group straddles a block end; blocks wider than the shared tile are capped at kTile.
  const int64_t B = std::min<int64_t>({opt.block, int64_t(kTile), n});
  Tensor codes_t = Tensor::empty({n, rows}, DType::U8, Device::CUDA);
  Tensor E = Tensor::empty({B, rows}, DType::F32, Device::CUDA);
  Tensor loss_d = Tensor::empty({rows}, DType::F64, Device::CUDA);
  LRQ_CUDA_CHECK(cudaMemsetAsync(loss_d.raw(), 0, loss_d.nbytes(), stream()));

  const size_t max_smem = size_t(B * B + B * kRowsPerCta) * sizeof(float);
  LRQ_CUDA_CHECK(cudaFuncSetAttribute(gptq_block_kernel,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, int(max_smem)));
  const cublasComputeType_t compute =
      cuda::allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const int ld_rows = cuda::blas_int(rows, "gptq"), ld_n = cuda::blas_int(n, "gptq");
  cuda::blas_int(n * rows, "gptq");
  const unsigned ctas = unsigned((rows + kRowsPerCta - 1) / kRowsPerCta);
  const float* u = f.U.data<float>();
  for (int64_t b0 = 0; b0 < n; b0 += B) {
    const int64_t b1 = std::min(n, b0 + B), bn = b1 - b0;
    BlockArgs a{Wp.data<float>(), u, imp_d.data<float>(), perm_d.data<int32_t>(),
                S.data<float>(), O.data<float>(), codes_t.data<uint8_t>(), E.data<float>(),
                loss_d.data<double>(), rows, n, b0, b1, g, opt.static_groups ? 1 : 0, p};
    const size_t smem = size_t(bn * bn + bn * kRowsPerCta) * sizeof(float);
    gptq_block_kernel<<<ctas, kRowsPerCta, smem, stream()>>>(a);
    LRQ_CUDA_LAUNCHED();
    if (b1 < n) {
      // Column-major views: Wt[b1:] is rows x (n - b1) with ld rows, E is rows x bn, and
      // U[b0:b1, b1:] read column-major is (n - b1) x bn with ld n. Wt[b1:] -= E * that^T.
      const float alpha = -1.f, beta = 1.f;
      LRQ_CUBLAS_CHECK(cublasGemmEx(cuda::cublas(), CUBLAS_OP_N, CUBLAS_OP_T, ld_rows,
                                    int(n - b1), int(bn), &alpha, E.data<float>(), CUDA_R_32F,
                                    ld_rows, u + b0 * n + b1, CUDA_R_32F, ld_n, &beta,
                                    Wp.data<float>() + b1 * rows, CUDA_R_32F, ld_rows, compute,
                                    CUBLAS_GEMM_DEFAULT));
    }
  }

  GptqResult res;
  {
    const Tensor l = loss_d.to(Device::CPU);
    double loss = 0;
    for (int64_t r = 0; r < rows; ++r) loss += l.data<double>()[r];
    res.loss = loss;
  }
  Tensor src;
  if (opt.act_order && opt.static_groups) {  // codes back to the input order
    std::vector<int32_t> inv(N);
    for (size_t i = 0; i < N; ++i) inv[size_t(f.perm[i])] = int32_t(i);
    src = to_device(inv, DType::I32);
  }
  res.q = pack_on_device(codes_t, src, S, O, rows, n, g, opt.grid);
  if (opt.act_order && !opt.static_groups) res.perm = f.perm;
  res.warning = f.warning;
  return res;
}

}  // namespace lrq::quant_cuda
