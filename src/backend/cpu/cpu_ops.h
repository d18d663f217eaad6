// CPU implementations of backend/ops.h (OpenBLAS, LAPACK, OpenMP, AVX2).
// Same signatures as backend/ops.h; ops.cpp dispatches on the tensors' device.
#pragma once
#include <span>

#include "backend/ops.h"
#include "core/tensor.h"

namespace lrq::cpu {

/// Threads for OpenMP (this calling thread) and OpenBLAS: the OpenMP build of OpenBLAS follows
/// the former, the pthreads build (the GPU machine's) has its own process-wide count.
void set_num_threads(int n);
void gemm(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C,
          double alpha, double beta);
void gemv(const Tensor& A, bool transA, const Tensor& x, const Tensor& y, double alpha,
          double beta);
void linear(const Tensor& x, const Tensor& W, const Tensor& y);
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
void xtx(const Tensor& X, const Tensor& G, bool accumulate);
double dot(const Tensor& A, const Tensor& B);
void fill_randn(const Tensor& X, uint64_t seed, double std);


// Shared by both backends' cholesky_qr (the k x k step runs on the host for either).
/// The inverse X = R^-1 (k x k, row-major, upper) of the Cholesky factor of G = R^T R (k x k,
/// row-major, symmetric, overwritten), with the pivots of numerically dependent columns
/// (Schur complement <= tol^2 times the column's own G_jj, or G_jj <= 0) dropped: their row and
/// column of X are zero, so A X zeroes those columns and orthonormalizes the rest.
void cholesky_drop_inverse(double* G, int64_t k, double tol, double* X);

}  // namespace lrq::cpu
