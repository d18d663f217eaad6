// The linear-algebra seam. Every numerical primitive the model and the quantization methods
// need, with one CPU implementation (backend/cpu: OpenBLAS, LAPACK, OpenMP, AVX2) and one CUDA
// implementation (backend/cuda: cuBLAS, cuSOLVER, our kernels) side by side. Each function
// dispatches on the device of its tensors; all tensors of one call live on one device.
//
// Conventions: matrices are row-major 2-D tensors; sizes are in elements. Output tensors are
// handles (a Tensor is a view), so outputs are `const Tensor&` and are written through.
// Functions that take F32 or F64 say so; anything else is an Error, not a silent conversion.
#pragma once
#include <cstdint>
#include <span>

#include "core/tensor.h"

namespace lrq::ops {

/// CPU threads for our OpenMP loops and for OpenBLAS (which otherwise keeps the core count it
/// read at load time, oversubscribing the machine when several processes share it).
void set_num_threads(int n);

// ------------------------------------------------------------------ dense linear algebra
/// C = alpha * op(A) * op(B) + beta * C. F32 or F64 (all three the same).
/// op(A) is m x k, op(B) is k x n, C is m x n.
void gemm(const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C,
          double alpha = 1.0, double beta = 0.0);
/// y = alpha * op(A) x + beta * y. F32 or F64.
void gemv(const Tensor& A, bool transA, const Tensor& x, const Tensor& y, double alpha = 1.0,
          double beta = 0.0);
/// y[T x out] = x[T x in] * W^T where W is out x in in F32, F16 or BF16 (a checkpoint weight,
/// possibly memory-mapped); accumulates in F32. The model's dense projections use this.
void linear(const Tensor& x, const Tensor& W, const Tensor& y);
/// linear(x, W[i], y[i]) for every i: projections that read one input (q/k/v, gate/up). On
/// the GPU's BF16 prefill path x is rounded to BF16 once for all of them.
void linear_many(const Tensor& x, std::span<const Tensor> W, std::span<const Tensor> y);

/// In place: A (n x n, symmetric positive definite) <- its lower Cholesky factor L (A = L L^T);
/// the strict upper triangle is zeroed. Returns false (A unspecified) if A is not positive
/// definite. F32 or F64.
bool cholesky(const Tensor& A);
/// In place: A (SPD) <- A^-1, through its Cholesky factorization. False if not SPD.
bool spd_inverse(const Tensor& A);
/// Solves op(L) X = B in place of B (n x k) for lower-triangular L (n x n). F32 or F64.
void trsm_lower(const Tensor& L, bool transL, const Tensor& B);
/// Symmetric eigendecomposition: A (n x n) -> eigenvalues w (n, ascending) and eigenvectors
/// as the columns of V (n x n). F32 or F64.
void eigh(const Tensor& A, const Tensor& w, const Tensor& V);
/// Thin SVD of A (m x n), k = min(m, n): U (m x k), S (k), Vt (k x n). F32 or F64.
void svd(const Tensor& A, const Tensor& U, const Tensor& S, const Tensor& Vt);
/// In place: the columns of A (m x k, m >= k) <- an orthonormal basis of their span (thin QR).
void orthonormalize_columns(const Tensor& A);

// ------------------------------------------------------------------ sketching (randomized low rank)
/// Fills X (any shape, F32) with standard normal values from a counter-based generator: the
/// pair (X[2i], X[2i+1]) is a pure function of (key, i) (one SplitMix64 output split into two
/// 32-bit uniforms, then Box-Muller in double), so a GPU draws its sketches on the device with no
/// sequential state and no host transfer. CPU and CUDA agree up to libm's last bit (after
/// rounding to F32, equal but for about one value in 10^8).
void fill_gaussian(const Tensor& X, uint64_t key);
/// G (k x k, F64) <- A^T A for A (m x k, F32 or F64), accumulated in double whatever A's dtype
/// (products of F32 values are exact in double), never on TF32 tensor cores.
void gram(const Tensor& A, const Tensor& G);
/// In place, `passes` times: Cholesky QR of A (m x k, m >= k, F32 or F64) in double:
/// G = A^T A = R^T R, A <- A R^-1. A column whose part orthogonal to the earlier columns is
/// below 64 unit roundoffs (of A's dtype) of its norm, i.e. numerically dependent, becomes
/// zero; the other columns become an orthonormal basis of the span of A's leading columns, in
/// order. One pass leaves orthogonality error ~1e-16 cond(A)^2, two reach A's precision. The
/// GEMM-only alternative to orthonormalize_columns: Householder QR is launch-bound on a GPU at
/// sketch shapes (thousands x tens), this is two small GEMMs and a k x k factorization (done on
/// the host: one round trip per pass).
void cholesky_qr(const Tensor& A, int passes = 2);

// ------------------------------------------------------------------ matrix utilities
/// In place: X <- alpha * diag(r) X diag(c) for X (m x n; a vector counts as one row).
/// r (m values) and c (n values) may be undefined (all ones); same dtype as X. F32 or F64.
void scale(const Tensor& X, double alpha, const Tensor& r = {}, const Tensor& c = {});
/// out (n x m) <- A^T for A (m x n). F32 or F64, both the same.
void transpose(const Tensor& A, const Tensor& out);
struct NormStats {
  double sumsq = 0;  // sum of x^2 (accumulated in double); inf or NaN if any x is not finite
  double amax = 0;   // max |x| (NaN entries are skipped)
};
/// One pass over X (any shape, F32 or F64): its squared Frobenius norm and largest |entry|.
NormStats norm_stats(const Tensor& X);
/// out[t, i] = x[t, perm[i]] / scale[perm[i]] for x and out (T x n, F32, not aliased). perm is
/// I32 [n] with entries in [0, n) (undefined: identity), scale F32/F16/BF16 [n] (undefined: no
/// division). A quantized layer's input permutation and channel scale in one pass. Without a
/// scale, x and out may also be F64 (an exact gather: methods permute H with it).
void permute_scale_cols(const Tensor& x, const Tensor& perm, const Tensor& scale,
                        const Tensor& out);

// ------------------------------------------------------------------ statistics, fills
/// acc += alpha * x elementwise: acc F64, x F32 or F64 of the same element count. The
/// calibration statistics keep their running sums in F64 on whichever device they live.
void accumulate(const Tensor& acc, const Tensor& x, double alpha = 1.0);
/// acc[j] += sum_t |x[t, j]| for x (T x n, F32) and acc (n values, F64); each column is summed
/// in row order by one thread, so the result does not depend on the launch.
void add_abs_col_sums(const Tensor& x, const Tensor& acc);
/// G (n x n, F32) <- X^T X, plus the old G when `accumulate`, for X (T x n, F32): the window
/// product of the calibration statistics. On the GPU it follows the matmul precision: TF32
/// when set_allow_tf32 is on, BF16-rounded X when set_bf16_matmul is on. Only G's upper
/// triangle (row-major, j >= i) is promised: the BF16 path skips most tiles below the diagonal
/// (the product is symmetric; about half the FLOPs), the others fill all of G. Read it with
/// accumulate_symmetric.
void xtx(const Tensor& X, const Tensor& G, bool accumulate);
/// acc (n x n, F64) += the symmetric matrix whose upper triangle (row-major, j >= i) is x's
/// (n x n, F32): acc[i][j] += x[min(i, j)][max(i, j)]. The result is exactly symmetric.
void accumulate_symmetric(const Tensor& acc, const Tensor& x);
/// x (F32) rounded to BF16 (nearest even), a new tensor on x's device.
Tensor to_bf16(const Tensor& x);
/// sum_i a_i b_i over all entries of A and B (same element count, F64).
double dot(const Tensor& A, const Tensor& B);
/// Fills X (F32, F16 or BF16) with N(0, std^2) samples of a counter-based generator: entry i
/// depends only on (seed, i), so a tensor is the same whatever its device (up to the last bit
/// of the transcendental functions). Synthetic benchmarks build weights with it.
void fill_randn(const Tensor& X, uint64_t seed, double std);
/// Lets F32 gemm/linear on the GPU round their inputs to TF32 (see cuda::set_allow_tf32);
/// returns the previous setting. No effect in a build without CUDA (returns false).
bool set_allow_tf32(bool allow);
/// Lets GPU prefill products and xtx round their activations to BF16 on the tensor cores
/// (cuda::set_bf16_matmul); returns the previous setting. No effect without CUDA (false).
bool set_bf16_matmul(bool on);
/// Waits for every queued GPU operation (for honest stage timings); nothing on a CPU build.
void synchronize();

// ------------------------------------------------------------------ transforms
/// In place: each row of X (rows x n) gets a normalized Walsh-Hadamard transform applied to
/// every consecutive block of `block` columns (block a power of two dividing n); the transform
/// is its own inverse. `skip_blocks` leading blocks are left untouched. F32 or F64.
void fwht_rows(const Tensor& X, int64_t block, int64_t skip_blocks = 0);

// ------------------------------------------------------------------ transformer pieces (F32)
/// out[t,:] = x[t,:] / rms(x[t,:]) * w (w: F32/F16/BF16 of length d). out may alias x.
void rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& out);
/// Rotary embedding in place on x (T x n_heads*head_dim) for positions pos0..pos0+T-1.
/// interleaved=false: Hugging Face rotate_half pairs (i, i+d/2); true: llama2.c pairs (2i, 2i+1).
void rope(const Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, float theta,
          bool interleaved);
/// Causal grouped-query attention. q: T x (Hq*d) for positions pos0..pos0+T-1; K, V: caches
/// (>= pos0+T rows) x (Hkv*d) already holding positions 0..pos0+T-1. out: T x (Hq*d).
/// On the GPU with set_bf16_matmul on, prefill (T >= 64) of head_dim 64 or 128 runs a fused
/// kernel on BF16 tensor cores (about 3e-3 relative instead of F32 rounding); with only
/// set_allow_tf32, prefill runs as cuBLAS GEMMs in TF32.
void attention(const Tensor& q, const Tensor& K, const Tensor& V, int64_t n_heads,
               int64_t n_kv_heads, int64_t head_dim, int64_t pos0, const Tensor& out);
/// out = silu(gate) * up, elementwise. out may alias gate.
void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out);
/// x += y (same shape).
void add_inplace(const Tensor& x, const Tensor& y);
/// x[t,:] += b (b of length x.dim(-1), F32/F16/BF16).
void add_row_vector(const Tensor& x, const Tensor& b);
/// out[t,:] = table[ids[t],:] converted to F32. ids must be valid (checked by the caller).
void embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out);

}  // namespace lrq::ops
