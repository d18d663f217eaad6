// CUDA implementations of backend/ops.h (cuBLAS, cuSOLVER, kernels). Built only with LRQ_WITH_CUDA.
// Same signatures as backend/ops.h; ops.cpp dispatches on the tensors' device.
#pragma once
#include <span>

#include "backend/ops.h"
#include "core/tensor.h"

namespace lrq::cuda {

void gemm(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C,
          double alpha, double beta);
void gemv(const Tensor& A, bool transA, const Tensor& x, const Tensor& y, double alpha,
          double beta);
void linear(const Tensor& x, const Tensor& W, const Tensor& y);
void linear_many(const Tensor& x, std::span<const Tensor> W, std::span<const Tensor> y);
bool cholesky(const Tensor& A);
bool spd_inverse(const Tensor& A);
void trsm_lower(const Tensor& L, bool transL, const Tensor& B);
void eigh(const Tensor& A, const Tensor& w, const Tensor& V);
void svd(const Tensor& A, const Tensor& U, const Tensor& S, const Tensor& Vt);
void orthonormalize_columns(const Tensor& A);
void fill_gaussian(const Tensor& X, uint64_t key);
void gram(const Tensor& A, const Tensor& G);
void cholesky_qr(const Tensor& A, int passes);
void scale(const Tensor& X, double alpha, const Tensor& r, const Tensor& c);
void transpose(const Tensor& A, const Tensor& out);
ops::NormStats norm_stats(const Tensor& X);
void permute_scale_cols(const Tensor& x, const Tensor& perm, const Tensor& scale,
                        const Tensor& out);
void fwht_rows(const Tensor& X, int64_t block, int64_t skip_blocks);
void rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& out);
void rope(const Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, float theta,
          bool interleaved);
void attention(const Tensor& q, const Tensor& K, const Tensor& V, int64_t n_heads,
               int64_t n_kv_heads, int64_t head_dim, int64_t pos0, const Tensor& out);
void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out);
void add_inplace(const Tensor& x, const Tensor& y);
void add_row_vector(const Tensor& x, const Tensor& b);
void embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out);
void accumulate(const Tensor& acc, const Tensor& x, double alpha);
void accumulate_symmetric(const Tensor& acc, const Tensor& x);
void add_abs_col_sums(const Tensor& x, const Tensor& acc);
double dot(const Tensor& A, const Tensor& B);
void fill_randn(const Tensor& X, uint64_t seed, double std);
/// Waits for the stream.
void synchronize();

/// Lets F32 gemm and linear round their inputs to TF32 on the tensor cores: several times
/// faster, but about 3e-4 relative error instead of 1e-7 (256-long sums on an H100), so results
/// stop matching the CPU. Long attention prefill then runs its GEMMs in TF32 too.
/// Off unless switched on here or by LRQ_CUDA_TF32=1 in the environment.
/// Returns the previous setting.
bool set_allow_tf32(bool allow);
bool allow_tf32();
/// Lets the activation x weight products of a prefill (linear with a BF16 weight, packed_gemm)
/// and the statistics' xtx round their F32 activations to BF16 and run on the BF16 tensor
/// cores, accumulating in F32: about twice the TF32 rate, at BF16's 2^-9 rounding of each
/// activation. Other F32 products are unaffected, except that long attention prefill (64+
/// queries, head_dim 64 or 128) goes to the fused kernel, which rounds Q, K, P and V to BF16
/// (about 3e-3 relative). Off unless switched on here.
/// Returns the previous setting.
bool set_bf16_matmul(bool on);
bool bf16_matmul();
/// out[i] = x[i] rounded to BF16 (nearest even), n values, queued on stream().
void to_bf16(const float* x, uint16_t* out, int64_t n);
/// Column-major C (m x n, ld ldc) = op(A) op(B) + beta C with BF16 A and B, F32 C and F32
/// accumulation (the tensor-core path of set_bf16_matmul).
void gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
/// G (+)= X^T X (see ops::xtx).
void xtx(const Tensor& X, const Tensor& G, bool accumulate);

}  // namespace lrq::cuda
