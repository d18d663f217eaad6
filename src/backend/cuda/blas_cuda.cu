// Dense products on the GPU: gemm and gemv through cuBLAS, linear (F32 activations times an
// F32/F16/BF16 weight) through cuBLAS for prefill and our own kernel for decode.
//
// cuBLAS is column-major. A row-major r x c matrix read column-major is its c x r transpose, so
// row-major C = op(A) op(B) is computed as column-major C^T = op(B)^T op(A)^T: the operands
// swap places and keep their transpose flags, and nothing is copied.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/widen.cuh"

namespace lrq::cuda {
namespace {

bool g_tf32 = [] {
  const char* e = std::getenv("LRQ_CUDA_TF32");
  return e && std::string_view(e) == "1";
}();

bool g_bf16 = false;
bool g_exact = false;

cublasComputeType_t f32_compute() {
  return g_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}
cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }
// Leading dimension of a row-major matrix with `cols` columns (cuBLAS wants at least 1).
int ld(int64_t cols, const char* name) { return blas_int(std::max<int64_t>(cols, 1), name); }

// Prefill widens the 16-bit weight slab by slab so the F32 copy stays at 16 MiB.
constexpr int64_t kSlabElems = int64_t(1) << 22;
// Up to this many tokens, linear reads each weight once in our kernel (memory-bound decode).
constexpr int kDecodeMaxT = 4;

template <bool BF>
__device__ __forceinline__ float w16(uint16_t h) {
  return BF ? bf16_bits_to_f32(h) : f16_bits_to_f32(h);
}

template <bool BF>
__global__ void widen_kernel(const uint16_t* __restrict__ w, float* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = w16<BF>(w[i]);
}

// `wpr` warps per output feature (1, 2, 4 or 8; a CTA of 8 warps holds 8 / wpr features): the
// warps stream the weight row once (16-byte loads when VEC) and dot it with each of the
// T <= kDecodeMaxT token rows. Several warps per feature keep the GPU busy when there are few
// features (a rank-32 low-rank factor has 32).
template <bool BF, bool VEC>
__global__ void __launch_bounds__(256) linear_decode_kernel(const float* __restrict__ x,
                                                            const uint16_t* __restrict__ w,
                                                            float* __restrict__ y, int T,
                                                            int64_t in, int64_t out, int wpr) {
  pdl_release_dependents();
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, part = warp % wpr;
  const int64_t o = blockIdx.x * int64_t(8 / wpr) + warp / wpr;
  float acc[kDecodeMaxT] = {};
  if (o < out) {
    const uint16_t* wr = w + o * in;
    const int stride = 32 * wpr;
    if (VEC) {
      for (int64_t i = (int64_t(part) * 32 + lane) * 8; i < in; i += int64_t(stride) * 8) {
        const uint4 pk = *reinterpret_cast<const uint4*>(wr + i);
        const uint32_t words[4] = {pk.x, pk.y, pk.z, pk.w};
        float wf[8];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          wf[2 * e] = w16<BF>(uint16_t(words[e] & 0xffffu));
          wf[2 * e + 1] = w16<BF>(uint16_t(words[e] >> 16));
        }
#pragma unroll
        for (int t = 0; t < kDecodeMaxT; ++t) {
          if (t < T) {
            const float4 a = *reinterpret_cast<const float4*>(x + t * in + i);
            const float4 b = *reinterpret_cast<const float4*>(x + t * in + i + 4);
            acc[t] += wf[0] * a.x + wf[1] * a.y + wf[2] * a.z + wf[3] * a.w + wf[4] * b.x +
                      wf[5] * b.y + wf[6] * b.z + wf[7] * b.w;
          }
        }
      }
    } else {
      for (int64_t i = int64_t(part) * 32 + lane; i < in; i += stride) {
        const float wv = w16<BF>(wr[i]);
#pragma unroll
        for (int t = 0; t < kDecodeMaxT; ++t)
          if (t < T) acc[t] += wv * x[t * in + i];
      }
    }
  }
  __shared__ float partial[8][kDecodeMaxT];
#pragma unroll
  for (int t = 0; t < kDecodeMaxT; ++t) {
    float v = acc[t];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) partial[warp][t] = v;
  }
  __syncthreads();
  if (part == 0 && lane < T && o < out) {
    float v = 0;
    for (int k = 0; k < wpr; ++k) v += partial[warp + k][lane];
    y[lane * out + o] = v;
  }
}

// y[:, r0:r0+rows] = x * Wf^T for a row-major F32 weight block Wf (rows x in, leading dim in).
void f32_linear_block(const float* x, const float* wf, float* y, int64_t T, int64_t rows,
                      int64_t in, int64_t out) {
  const float one = 1.0f, zero = 0.0f;
  LRQ_CUBLAS_CHECK(cublasGemmEx(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, blas_int(rows, "linear"),
                                blas_int(T, "linear"), blas_int(in, "linear"), &one, wf,
                                CUDA_R_32F, ld(in, "linear"), x, CUDA_R_32F, ld(in, "linear"),
                                &zero, y, CUDA_R_32F, ld(out, "linear"), f32_compute(),
                                CUBLAS_GEMM_DEFAULT));
}

__global__ void to_bf16_kernel(const float* __restrict__ x, uint16_t* __restrict__ out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}

// Prefill with a BF16 weight under set_bf16_matmul: x rounded to BF16 (xs), one tensor-core
// GEMM. linear16 and linear_many decide it by this one rule, so a shared rounding gives the
// same bits as separate calls.
bool bf16_prefill(int64_t T, bool bf16_weight) { return bf16_weight && g_bf16 && T > kDecodeMaxT; }

void bf16_prefill_gemm(const uint16_t* xs, const uint16_t* w, float* y, int64_t T, int64_t in,
                       int64_t out) {
  gemm_bf16(true, false, out, T, in, w, in, xs, in, 0.0f, y, out);
}

template <bool BF>
void linear16(const float* x, const uint16_t* w, float* y, int64_t T, int64_t in, int64_t out) {
  if (T <= kDecodeMaxT) {
    const bool vec = in % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(x) % 16 == 0;
    // More warps per feature while the grid stays within 32 warps per SM and every lane still
    // has a 16-byte load of its own.
    int wpr = 1;
    while (wpr < 8 && out * wpr * 2 <= int64_t(sm_count()) * 32 &&
           in >= int64_t(wpr) * 2 * 32 * 8)
      wpr *= 2;
    const int per_block = 8 / wpr;
    const unsigned blocks = unsigned((out + per_block - 1) / per_block);
    if (vec)
      linear_decode_kernel<BF, true><<<blocks, 256, 0, stream()>>>(x, w, y, int(T), in, out, wpr);
    else
      linear_decode_kernel<BF, false><<<blocks, 256, 0, stream()>>>(x, w, y, int(T), in, out, wpr);
    LRQ_CUDA_LAUNCHED();
    return;
  }
  if (bf16_prefill(T, BF)) {
    // The weight is already BF16: only the activations are rounded, no widened copy.
    DeviceScratch xs(size_t(T * in) * sizeof(uint16_t));
    to_bf16(x, xs.as<uint16_t>(), T * in);
    bf16_prefill_gemm(xs.as<uint16_t>(), w, y, T, in, out);
    return;
  }
  const int64_t slab = std::clamp<int64_t>(kSlabElems / std::max<int64_t>(in, 1), 1, out);
  DeviceScratch buf(size_t(slab * in) * sizeof(float));
  for (int64_t r0 = 0; r0 < out; r0 += slab) {
    const int64_t rows = std::min(slab, out - r0);
    widen_kernel<BF><<<grid_for(rows * in, 256), 256, 0, stream()>>>(w + r0 * in,
                                                                     buf.as<float>(), rows * in);
    LRQ_CUDA_LAUNCHED();
    f32_linear_block(x, buf.as<float>(), y + r0, T, rows, in, out);
  }
}

}  // namespace

bool set_allow_tf32(bool allow) { return std::exchange(g_tf32, allow); }
bool allow_tf32() { return g_tf32; }
bool set_bf16_matmul(bool on) { return std::exchange(g_bf16, on); }
bool bf16_matmul() { return g_bf16; }
bool set_exact_kernels(bool on) { return std::exchange(g_exact, on); }
bool exact_kernels() { return g_exact; }

void to_bf16(const float* x, uint16_t* out, int64_t n) {
  if (n <= 0) return;
  to_bf16_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(x, out, n);
  LRQ_CUDA_LAUNCHED();
}

Tensor to_bf16(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), DType::BF16, x.device());
  to_bf16(x.data<float>(), static_cast<uint16_t*>(out.raw()), x.numel());
  return out;
}

void gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const float one = 1.0f;
  LRQ_CUBLAS_CHECK(cublasGemmEx(cublas(), op(ta), op(tb), blas_int(m, "gemm_bf16"),
                                blas_int(n, "gemm_bf16"), blas_int(k, "gemm_bf16"), &one, A,
                                CUDA_R_16BF, ld(lda, "gemm_bf16"), B, CUDA_R_16BF,
                                ld(ldb, "gemm_bf16"), &beta, C, CUDA_R_32F, ld(ldc, "gemm_bf16"),
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void gemm(const Tensor& A, bool ta, const Tensor& B, bool tb, const Tensor& C, double alpha,
          double beta) {
  const int64_t m = ta ? A.dim(1) : A.dim(0), k = ta ? A.dim(0) : A.dim(1);
  const int64_t n = tb ? B.dim(0) : B.dim(1);
  if (m == 0 || n == 0) return;
  const int M = blas_int(m, "gemm"), N = blas_int(n, "gemm"), K = blas_int(k, "gemm");
  const int lda = ld(A.dim(1), "gemm"), ldb = ld(B.dim(1), "gemm"), ldc = ld(n, "gemm");
  if (A.dtype() == DType::F32) {
    const float a = float(alpha), b = float(beta);
    LRQ_CUBLAS_CHECK(cublasGemmEx(cublas(), op(tb), op(ta), N, M, K, &a, B.raw(), CUDA_R_32F, ldb,
                                  A.raw(), CUDA_R_32F, lda, &b, C.raw(), CUDA_R_32F, ldc,
                                  f32_compute(), CUBLAS_GEMM_DEFAULT));
  } else {
    LRQ_CUBLAS_CHECK(cublasDgemm(cublas(), op(tb), op(ta), N, M, K, &alpha, B.data<double>(), ldb,
                                 A.data<double>(), lda, &beta, C.data<double>(), ldc));
  }
}

void gemv(const Tensor& A, bool ta, const Tensor& x, const Tensor& y, double alpha, double beta) {
  // Column-major, A is its transpose: flip the flag.
  const int M = blas_int(A.dim(1), "gemv"), N = blas_int(A.dim(0), "gemv");
  const int lda = ld(A.dim(1), "gemv");
  if (A.dtype() == DType::F32) {
    const float a = float(alpha), b = float(beta);
    LRQ_CUBLAS_CHECK(cublasSgemv(cublas(), op(!ta), M, N, &a, A.data<float>(), lda,
                                 x.data<float>(), 1, &b, y.data<float>(), 1));
  } else {
    LRQ_CUBLAS_CHECK(cublasDgemv(cublas(), op(!ta), M, N, &alpha, A.data<double>(), lda,
                                 x.data<double>(), 1, &beta, y.data<double>(), 1));
  }
}

void linear_many(const Tensor& x, std::span<const Tensor> W, std::span<const Tensor> y) {
  const int64_t in = x.ndim() ? x.dim(-1) : 0, T = in ? x.numel() / in : 0;
  bool shared = bf16_prefill(T, true) && x.dtype() == DType::F32;
  for (size_t i = 0; shared && i < W.size(); ++i)
    shared = W[i].dtype() == DType::BF16 && W[i].ndim() == 2 && W[i].dim(1) == in &&
             y[i].dtype() == DType::F32 && y[i].numel() == T * W[i].dim(0) &&
             !W[i].is_cpu() && !y[i].is_cpu();
  if (!shared || x.is_cpu()) {
    for (size_t i = 0; i < W.size(); ++i) linear(x, W[i], y[i]);
    return;
  }
  DeviceScratch xs(size_t(T * in) * sizeof(uint16_t));
  to_bf16(x.data<float>(), xs.as<uint16_t>(), T * in);
  for (size_t i = 0; i < W.size(); ++i) {
    if (W[i].dim(0) == 0) continue;
    bf16_prefill_gemm(xs.as<uint16_t>(), static_cast<const uint16_t*>(W[i].raw()),
                      y[i].data<float>(), T, in, W[i].dim(0));
  }
}

void linear(const Tensor& x, const Tensor& W, const Tensor& y) {
  const int64_t out = W.dim(0), in = W.dim(1), T = x.numel() / std::max<int64_t>(in, 1);
  if (T == 0 || out == 0) return;
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  const auto* w16p = static_cast<const uint16_t*>(W.raw());
  switch (W.dtype()) {
    case DType::F32: f32_linear_block(xp, W.data<float>(), yp, T, out, in, out); break;
    case DType::BF16: linear16<true>(xp, w16p, yp, T, in, out); break;
    case DType::F16: linear16<false>(xp, w16p, yp, T, in, out); break;
    default: break;  // checks::linear admits no other dtype
  }
}

}  // namespace lrq::cuda
