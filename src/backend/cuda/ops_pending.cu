// Placeholders for CUDA ops not written yet: each fails with a clear message.
// Replace one by one with real implementations in their own .cu files.
#include "backend/cuda/cuda_ops.h"

namespace lrq::cuda {

void gemm(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C,
          double alpha, double beta) {
  fail_msg("cuda", "gemm is not implemented on CUDA yet");
}
void gemv(const Tensor& A, bool transA, const Tensor& x, const Tensor& y, double alpha,
          double beta) {
  fail_msg("cuda", "gemv is not implemented on CUDA yet");
}
void linear(const Tensor& x, const Tensor& W, const Tensor& y) {
  fail_msg("cuda", "linear is not implemented on CUDA yet");
}
bool cholesky(const Tensor& A) {
  fail_msg("cuda", "cholesky is not implemented on CUDA yet");
}
bool spd_inverse(const Tensor& A) {
  fail_msg("cuda", "spd_inverse is not implemented on CUDA yet");
}
void trsm_lower(const Tensor& L, bool transL, const Tensor& B) {
  fail_msg("cuda", "trsm_lower is not implemented on CUDA yet");
}
void eigh(const Tensor& A, const Tensor& w, const Tensor& V) {
  fail_msg("cuda", "eigh is not implemented on CUDA yet");
}
void svd(const Tensor& A, const Tensor& U, const Tensor& S, const Tensor& Vt) {
  fail_msg("cuda", "svd is not implemented on CUDA yet");
}
void orthonormalize_columns(const Tensor& A) {
  fail_msg("cuda", "orthonormalize_columns is not implemented on CUDA yet");
}
void scale(const Tensor& X, double alpha, const Tensor& r, const Tensor& c) {
  fail_msg("cuda", "scale is not implemented on CUDA yet");
}
void transpose(const Tensor& A, const Tensor& out) {
  fail_msg("cuda", "transpose is not implemented on CUDA yet");
}
ops::NormStats norm_stats(const Tensor& X) {
  fail_msg("cuda", "norm_stats is not implemented on CUDA yet");
}
void fwht_rows(const Tensor& X, int64_t block, int64_t skip_blocks) {
  fail_msg("cuda", "fwht_rows is not implemented on CUDA yet");
}
void rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) {
  fail_msg("cuda", "rmsnorm is not implemented on CUDA yet");
}
void rope(const Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, float theta,
          bool interleaved) {
  fail_msg("cuda", "rope is not implemented on CUDA yet");
}
void attention(const Tensor& q, const Tensor& K, const Tensor& V, int64_t n_heads,
               int64_t n_kv_heads, int64_t head_dim, int64_t pos0, const Tensor& out) {
  fail_msg("cuda", "attention is not implemented on CUDA yet");
}
void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  fail_msg("cuda", "silu_mul is not implemented on CUDA yet");
}
void add_inplace(const Tensor& x, const Tensor& y) {
  fail_msg("cuda", "add_inplace is not implemented on CUDA yet");
}
void add_row_vector(const Tensor& x, const Tensor& b) {
  fail_msg("cuda", "add_row_vector is not implemented on CUDA yet");
}
void embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) {
  fail_msg("cuda", "embedding is not implemented on CUDA yet");
}

}  // namespace lrq::cuda
