// The seam's op list, written once (an X-macro table; no include guard on purpose). Every entry
// becomes the public declaration in backend/ops.h (documented here, beside the entry), the
// declarations of the cpu:: and cuda:: implementations, the shared argument check in
// backend/checks.h, and the dispatching definition in backend/ops.cpp.
//
// An includer defines LRQ_OP(name, ret, params, args, devices) and includes this file:
//   name     the function's name in lrq::ops, lrq::cpu, lrq::cuda and lrq::checks
//   ret      its return type
//   params   the parenthesized parameter list; a public default argument is written
//            LRQ_DEFAULT(value), which only ops.h turns into `= value`
//   args     the parameter names, parenthesized, to forward the call
//   devices  pointers to the tensors whose device picks the backend (undefined ones are
//            skipped; all defined ones must agree)
// LRQ_OP and LRQ_DEFAULT are undefined at the end.
//
// Conventions: matrices are row-major 2-D tensors; sizes are in elements. Output tensors are
// handles (a Tensor is a view), so outputs are `const Tensor&` and are written through.
// Functions that take F32 or F64 say so; anything else is an Error, not a silent conversion.
#ifndef LRQ_DEFAULT
#define LRQ_DEFAULT(value)
#endif

// ------------------------------------------------------------------ dense linear algebra
/// C = alpha * op(A) * op(B) + beta * C. F32 or F64 (all three the same).
/// op(A) is m x k, op(B) is k x n, C is m x n.
LRQ_OP(gemm, void,
       (const Tensor& A, bool transA, const Tensor& B, bool transB, const Tensor& C,
        double alpha LRQ_DEFAULT(1.0), double beta LRQ_DEFAULT(0.0)),
       (A, transA, B, transB, C, alpha, beta), (&A, &B, &C))
/// y = alpha * op(A) x + beta * y. F32 or F64.
LRQ_OP(gemv, void,
       (const Tensor& A, bool transA, const Tensor& x, const Tensor& y,
        double alpha LRQ_DEFAULT(1.0), double beta LRQ_DEFAULT(0.0)),
       (A, transA, x, y, alpha, beta), (&A, &x, &y))
/// y[T x out] = x[T x in] * W^T where W is out x in in F32, F16 or BF16 (a checkpoint weight,
/// possibly memory-mapped); accumulates in F32. The model's dense projections use this.
LRQ_OP(linear, void, (const Tensor& x, const Tensor& W, const Tensor& y), (x, W, y),
       (&x, &W, &y))
/// linear(x, W[i], y[i]) for every i: projections that read one input (q/k/v, gate/up). On
/// the GPU's BF16 prefill path x is rounded to BF16 once for all of them.
LRQ_OP(linear_many, void,
       (const Tensor& x, std::span<const Tensor> W, std::span<const Tensor> y), (x, W, y), (&x))

/// In place: A (n x n, symmetric positive definite) <- its lower Cholesky factor L (A = L L^T);
/// the strict upper triangle is zeroed. Returns false (A unspecified) if A is not positive
/// definite. F32 or F64.
LRQ_OP(cholesky, bool, (const Tensor& A), (A), (&A))
/// In place: A (SPD) <- A^-1, through its Cholesky factorization. False if not SPD.
LRQ_OP(spd_inverse, bool, (const Tensor& A), (A), (&A))
/// Solves op(L) X = B in place of B (n x k) for lower-triangular L (n x n). F32 or F64.
LRQ_OP(trsm_lower, void, (const Tensor& L, bool transL, const Tensor& B), (L, transL, B),
       (&L, &B))
/// Symmetric eigendecomposition: A (n x n) -> eigenvalues w (n, ascending) and eigenvectors
/// as the columns of V (n x n). F32 or F64.
LRQ_OP(eigh, void, (const Tensor& A, const Tensor& w, const Tensor& V), (A, w, V), (&A, &w, &V))
/// Thin SVD of A (m x n), k = min(m, n): U (m x k), S (k), Vt (k x n). F32 or F64.
LRQ_OP(svd, void, (const Tensor& A, const Tensor& U, const Tensor& S, const Tensor& Vt),
       (A, U, S, Vt), (&A, &U, &S, &Vt))
/// In place: the columns of A (m x k, m >= k) <- an orthonormal basis of their span (thin QR).
LRQ_OP(orthonormalize_columns, void, (const Tensor& A), (A), (&A))

// ------------------------------------------------------------------ sketching (randomized low rank)
/// Fills X (any shape, F32) with standard normal values from a counter-based generator: the
/// pair (X[2i], X[2i+1]) is a pure function of (key, i) (one SplitMix64 output split into two
/// 32-bit uniforms, then Box-Muller in double), so a GPU draws its sketches on the device with no
/// sequential state and no host transfer. CPU and CUDA agree up to libm's last bit (after
/// rounding to F32, equal but for about one value in 10^8).
LRQ_OP(fill_gaussian, void, (const Tensor& X, uint64_t key), (X, key), (&X))
/// G (k x k, F64) <- A^T A for A (m x k, F32 or F64), accumulated in double whatever A's dtype
/// (products of F32 values are exact in double), never on TF32 tensor cores.
LRQ_OP(gram, void, (const Tensor& A, const Tensor& G), (A, G), (&A, &G))
/// In place, `passes` times: Cholesky QR of A (m x k, m >= k, F32 or F64) in double:
/// G = A^T A = R^T R, A <- A R^-1. A column whose part orthogonal to the earlier columns is
/// below 64 unit roundoffs (of A's dtype) of its norm, i.e. numerically dependent, becomes
/// zero; the other columns become an orthonormal basis of the span of A's leading columns, in
/// order. One pass leaves orthogonality error ~1e-16 cond(A)^2, two reach A's precision. The
/// GEMM-only alternative to orthonormalize_columns: Householder QR is launch-bound on a GPU at
/// sketch shapes (thousands x tens), this is two small GEMMs and a k x k factorization (done on
/// the host: one round trip per pass).
LRQ_OP(cholesky_qr, void, (const Tensor& A, int passes LRQ_DEFAULT(2)), (A, passes), (&A))

// ------------------------------------------------------------------ matrix utilities
/// In place: X <- alpha * diag(r) X diag(c) for X (m x n; a vector counts as one row).
/// r (m values) and c (n values) may be undefined (all ones); same dtype as X. F32 or F64.
LRQ_OP(scale, void,
       (const Tensor& X, double alpha, const Tensor& r LRQ_DEFAULT({}),
        const Tensor& c LRQ_DEFAULT({})),
       (X, alpha, r, c), (&X, &r, &c))
/// out (n x m) <- A^T for A (m x n). F32 or F64, both the same.
LRQ_OP(transpose, void, (const Tensor& A, const Tensor& out), (A, out), (&A, &out))
/// One pass over X (any shape, F32 or F64): its squared Frobenius norm and largest |entry|.
LRQ_OP(norm_stats, NormStats, (const Tensor& X), (X), (&X))
/// out[t, i] = x[t, perm[i]] / scale[perm[i]] for x and out (T x n, F32, not aliased). perm is
/// I32 [n] with entries in [0, n) (undefined: identity), scale F32/F16/BF16 [n] (undefined: no
/// division). A quantized layer's input permutation and channel scale in one pass. Without a
/// scale, x and out may also be F64 (an exact gather: methods permute H with it).
LRQ_OP(permute_scale_cols, void,
       (const Tensor& x, const Tensor& perm, const Tensor& scale, const Tensor& out),
       (x, perm, scale, out), (&x, &perm, &scale, &out))

// ------------------------------------------------------------------ statistics, fills
/// acc += alpha * x elementwise: acc F64, x F32 or F64 of the same element count. The
/// calibration statistics keep their running sums in F64 on whichever device they live.
LRQ_OP(accumulate, void, (const Tensor& acc, const Tensor& x, double alpha LRQ_DEFAULT(1.0)),
       (acc, x, alpha), (&acc, &x))
/// acc[j] += sum_t |x[t, j]| for x (T x n, F32) and acc (n values, F64); each column is summed
/// in row order by one thread, so the result does not depend on the launch.
LRQ_OP(add_abs_col_sums, void, (const Tensor& x, const Tensor& acc), (x, acc), (&x, &acc))
/// G (n x n, F32) <- X^T X, plus the old G when `accumulate`, for X (T x n, F32): the window
/// product of the calibration statistics. On the GPU it follows the matmul precision: TF32
/// when set_allow_tf32 is on, BF16-rounded X when set_bf16_matmul is on. Only G's upper
/// triangle (row-major, j >= i) is promised: the BF16 path skips most tiles below the diagonal
/// (the product is symmetric; about half the FLOPs), the others fill all of G. Read it with
/// accumulate_symmetric.
LRQ_OP(xtx, void, (const Tensor& X, const Tensor& G, bool accumulate), (X, G, accumulate),
       (&X, &G))
/// acc (n x n, F64) += the symmetric matrix whose upper triangle (row-major, j >= i) is x's
/// (n x n, F32): acc[i][j] += x[min(i, j)][max(i, j)]. The result is exactly symmetric.
LRQ_OP(accumulate_symmetric, void, (const Tensor& acc, const Tensor& x), (acc, x), (&acc, &x))
/// x (F32) rounded to BF16 (nearest even), a new tensor on x's device.
LRQ_OP(to_bf16, Tensor, (const Tensor& x), (x), (&x))
/// sum_i a_i b_i over all entries of A and B (same element count, F64).
LRQ_OP(dot, double, (const Tensor& A, const Tensor& B), (A, B), (&A, &B))
/// Fills X (F32, F16 or BF16) with N(0, std^2) samples of a counter-based generator: entry i
/// depends only on (seed, i), so a tensor is the same whatever its device (up to the last bit
/// of the transcendental functions). Synthetic benchmarks build weights with it.
LRQ_OP(fill_randn, void, (const Tensor& X, uint64_t seed, double std), (X, seed, std), (&X))
/// Flat index of the first inf or NaN among x's values (F16), or -1. On the GPU only the index
/// comes to the host.
LRQ_OP(first_nonfinite, int64_t, (const Tensor& x), (x), (&x))

// ------------------------------------------------------------------ transforms
/// In place: each row of X (rows x n) gets a normalized Walsh-Hadamard transform applied to
/// every consecutive block of `block` columns (block a power of two dividing n); the transform
/// is its own inverse. `skip_blocks` leading blocks are left untouched. F32 or F64.
LRQ_OP(fwht_rows, void, (const Tensor& X, int64_t block, int64_t skip_blocks LRQ_DEFAULT(0)),
       (X, block, skip_blocks), (&X))

// ------------------------------------------------------------------ transformer pieces
// Activations are F32. rmsnorm, rope, attention, silu_mul and add_inplace also take F64 (every
// activation of the call F64): the gradient checks differentiate them in double. The F64 forms
// compute the same formulas without rounding; the F32 results do not depend on their existence.
/// out[t,:] = x[t,:] / rms(x[t,:]) * w (w: F32/F16/BF16 of length d; F64 too when x is F64).
/// out may alias x. rms = sqrt(mean(x^2) + eps), the sum of squares accumulated in double.
LRQ_OP(rmsnorm, void, (const Tensor& x, const Tensor& w, float eps, const Tensor& out),
       (x, w, eps, out), (&x, &w, &out))
/// Rotary embedding in place on x (T x n_heads*head_dim) for positions pos0..pos0+T-1.
/// interleaved=false: Hugging Face rotate_half pairs (i, i+d/2); true: llama2.c pairs (2i, 2i+1).
/// In F32 the angles are Hugging Face's float32 ones; in F64 the same formula in double.
LRQ_OP(rope, void,
       (const Tensor& x, int64_t n_heads, int64_t head_dim, int64_t pos0, float theta,
        bool interleaved),
       (x, n_heads, head_dim, pos0, theta, interleaved), (&x))
/// Causal grouped-query attention. q: T x (Hq*d) for positions pos0..pos0+T-1; K, V: caches
/// (>= pos0+T rows) x (Hkv*d) already holding positions 0..pos0+T-1. out: T x (Hq*d).
/// Query head h reads KV head h / (Hq / Hkv); scores are scaled by 1/sqrt(d).
/// On the GPU with set_bf16_matmul on, prefill (T >= 64) of head_dim 64 or 128 runs a fused
/// kernel on BF16 tensor cores (about 3e-3 relative instead of F32 rounding); with only
/// set_allow_tf32, prefill runs as cuBLAS GEMMs in TF32. F64 never takes either.
LRQ_OP(attention, void,
       (const Tensor& q, const Tensor& K, const Tensor& V, int64_t n_heads, int64_t n_kv_heads,
        int64_t head_dim, int64_t pos0, const Tensor& out),
       (q, K, V, n_heads, n_kv_heads, head_dim, pos0, out), (&q, &K, &V, &out))
/// out = silu(gate) * up, elementwise. out may alias gate.
LRQ_OP(silu_mul, void, (const Tensor& gate, const Tensor& up, const Tensor& out),
       (gate, up, out), (&gate, &up, &out))
/// x += y (same element count and dtype).
LRQ_OP(add_inplace, void, (const Tensor& x, const Tensor& y), (x, y), (&x, &y))
/// In place on x (F32, rows x n): each row fake-quantized to an asymmetric `bits`-bit grid of
/// its own (per-token dynamic activation quantization, a8 / kv8): lo, hi = the row's min and max,
/// step = (hi - lo) / (2^bits - 1), zero = rint(-lo / step) (not clamped: the grid covers
/// [lo, hi] whatever the signs), x <- (clamp(rint(x / step) + zero, 0, 2^bits - 1) - zero) * step,
/// every operation rounded in F32 as written (no contraction), so CPU and CUDA agree bit for bit.
/// A row with hi == lo (or a non-finite range) is left unchanged. bits 2..16.
LRQ_OP(fake_quant_rows, void, (const Tensor& x, int bits), (x, bits), (&x))
/// In place on x (F32, any shape): x <- clamp(rint(x / step), -2^(bits-1), 2^(bits-1) - 1) * step,
/// one static symmetric grid for the whole tensor (a8=tensor). step finite and > 0; bits 2..16.
LRQ_OP(fake_quant_tensor, void, (const Tensor& x, float step, int bits), (x, step, bits), (&x))
/// x[t,:] += b (b of length x.dim(-1), F32/F16/BF16).
LRQ_OP(add_row_vector, void, (const Tensor& x, const Tensor& b), (x, b), (&x, &b))
/// out[t,:] = table[ids[t],:] converted to F32. An id outside the table is an Error (on the GPU
/// it would be a wild read).
LRQ_OP(embedding, void, (const Tensor& table, std::span<const int32_t> ids, const Tensor& out),
       (table, ids, out), (&table, &out))

// ------------------------------------------------------------------ transformer backward (training)
// The gradients of the pieces above, for training a block by backpropagation (LRQ). F32 or
// F64, every activation and gradient of one call the same dtype. Each takes dL/d(output) and
// gives dL/d(inputs); a linear layer needs no op of its own (y = x W^T: dx = dy W and
// dW += dy^T x are gemm calls), nor do residual adds (add_inplace). Training windows start at
// position 0, so the attention pair has no pos0 and its K and V are this window's T rows.
/// attention(q, K, V, ..., pos0 = 0, out) for training, which also writes lse [n_heads, T]:
/// lse[h, t] = log sum_j exp(s_tj) over the scores s_tj = q_t . k_j / sqrt(d) that row t of
/// head h sees, so the backward recomputes the probabilities exp(s - lse) instead of storing
/// T x T of them. K, V: T x (Hkv*d), exactly the window's rows. Never on the BF16/TF32 paths.
/// The GPU runs a tiled kernel (FlashAttention-2's forward, the scores never in global memory).
LRQ_OP(attention_train, void,
       (const Tensor& q, const Tensor& K, const Tensor& V, int64_t n_heads, int64_t n_kv_heads,
        int64_t head_dim, const Tensor& out, const Tensor& lse),
       (q, K, V, n_heads, n_kv_heads, head_dim, out, lse), (&q, &K, &V, &out, &lse))
/// The gradients of attention_train given its inputs, its out and lse, and dout = dL/dout
/// (T x Hq*d): dq (like q), dK and dV (like K and V) are overwritten; dK and dV are summed over
/// the Hq/Hkv query heads that share a KV head. Outputs may not alias inputs. The CPU forms
/// one head's probabilities for up to 128 query rows at a time; the GPU never forms them
/// outside a tile (FlashAttention-2's backward: one pass per key tile for dK and dV, one per
/// query tile for dq, each recomputing its probability tiles from lse; no atomics, so the
/// result does not depend on scheduling).
LRQ_OP(attention_backward, void,
       (const Tensor& q, const Tensor& K, const Tensor& V, const Tensor& out, const Tensor& lse,
        const Tensor& dout, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
        const Tensor& dq, const Tensor& dK, const Tensor& dV),
       (q, K, V, out, lse, dout, n_heads, n_kv_heads, head_dim, dq, dK, dV),
       (&q, &K, &V, &out, &lse, &dout, &dq, &dK, &dV))
/// The gradients of out = rmsnorm(x, w, eps): dx = dL/dx given dy = dL/dout (both like x; dx
/// may alias dy), and dw += sum over rows of dy * x / rms (d values in x's dtype; undefined:
/// not wanted, e.g. a frozen norm). rms is recomputed exactly as rmsnorm computes it; the
/// row sums and dw's column sums are accumulated in double, in an order fixed by the shape.
LRQ_OP(rmsnorm_backward, void,
       (const Tensor& x, const Tensor& w, float eps, const Tensor& dy, const Tensor& dx,
        const Tensor& dw),
       (x, w, eps, dy, dx, dw), (&x, &w, &dy, &dx, &dw))
/// In place on dx (T x n_heads*head_dim): dx <- R^T dx, the transpose of rope's rotation with
/// the same arguments and the same angles (the rotation by the opposite angle).
LRQ_OP(rope_backward, void,
       (const Tensor& dx, int64_t n_heads, int64_t head_dim, int64_t pos0, float theta,
        bool interleaved),
       (dx, n_heads, head_dim, pos0, theta, interleaved), (&dx))
/// The gradients of out = silu(gate) * up given dout: dup = dout * silu(gate) and
/// dgate = dout * up * sigmoid(gate) * (1 + gate * (1 - sigmoid(gate))). Elementwise, each
/// element read before it is written, so dgate and dup may alias gate, up or dout.
LRQ_OP(silu_mul_backward, void,
       (const Tensor& gate, const Tensor& up, const Tensor& dout, const Tensor& dgate,
        const Tensor& dup),
       (gate, up, dout, dgate, dup), (&gate, &up, &dout, &dgate, &dup))

// ------------------------------------------------------------------ whole-model training
// The pieces a language-model loss adds around the blocks (model/model_grad.h). F32 or F64
// (logits, gradients and tables of one call the same dtype). The CUDA forms are not written yet
// (an Error naming the op).
/// Cross-entropy of each row of logits (T x V) against targets[t] (a vocabulary index; a
/// negative target skips the row: no loss, zero gradient): returns sum_t (lse_t - logits[t,
/// targets[t]]) with lse_t = log sum_j exp(logits[t, j]), each row's max subtracted first and its
/// sum of exponentials taken in double; rows are added in order, so the sum does not depend on
/// threads. dlogits (like logits; may alias it; undefined: no gradient) <- scale *
/// (softmax(logits[t]) - onehot(targets[t])).
LRQ_OP(cross_entropy, double,
       (const Tensor& logits, std::span<const int32_t> targets, const Tensor& dlogits,
        double scale),
       (logits, targets, dlogits, scale), (&logits, &dlogits))
/// The gradient of embedding(): dtable[ids[t], :] += dout[t, :] for dout (T x d) and dtable
/// (vocab x d), both F32 or both F64. Repeated ids add in t order (column slices in parallel, so
/// the sums do not depend on threads).
LRQ_OP(embedding_backward, void,
       (std::span<const int32_t> ids, const Tensor& dout, const Tensor& dtable),
       (ids, dout, dtable), (&dout, &dtable))
/// LoRDS quantization-aware training's straight-through backward. The forward is
/// W_hat = q(W / S) S with q() the nearest codebook entry (the codes lords_assign writes for W
/// and S); q() counts as the identity inside the codebook's range [c_0, c_K-1] and as the
/// constant edge outside it (the clamp of the INT4 QAT). So with t = W / S, q = codebook[code]
/// and G = dL/dW_hat: dW = G inside the range, 0 outside; dS = G (q - t) inside, G q outside.
/// All F32 [m, n] but codes (U8 [m, n]) and the codebook (F32 [K]); dW or dS undefined: not
/// written; dS may alias G (elementwise, read before written).
LRQ_OP(lords_ste_backward, void,
       (const Tensor& W, const Tensor& S, const Tensor& codes, const Tensor& codebook,
        const Tensor& G, const Tensor& dW, const Tensor& dS),
       (W, S, codes, codebook, G, dW, dS), (&W, &S, &codes, &codebook, &G, &dW, &dS))

// ------------------------------------------------------------------ packed matrices
// The quantize / dequantize / quantized-matmul triad over a Packed matrix (bit layout in
// formats/packed_weight.h; formats/format_traits.h pins the chunk facts).
/// Encodes codes U8 [rows, cols] (cols a multiple of 32) into packed U8 [rows, cols*bits/8] at
/// `bits` (2, 3, 4 or 8), on one device. Every code is checked first: the result names the
/// first that is >= 2^bits (packed is then unspecified), or has bad = -1.
LRQ_OP(packed_encode, PackedEncodeResult, (const Tensor& codes, int bits, const Tensor& packed),
       (codes, bits, packed), (&codes, &packed))
/// The inverse of packed_encode: packed U8 [rows, cols*bits/8] -> codes U8 [rows, cols]. CPU
/// only (tests and tools read codes; the GPU never needs them back).
LRQ_OP(packed_decode, void, (const Tensor& packed, int bits, const Tensor& codes),
       (packed, bits, codes), (&packed, &codes))
/// out (F32 [w.rows(), w.cols()]) <- the represented matrix. A view of whole rows of a weight
/// (codes, scales and offsets sliced alike) dequantizes those rows.
LRQ_OP(packed_dequantize, void, (const Packed& w, const Tensor& out), (w, out),
       (&w.codes, &out))
/// y[T, rows] (+)= x[T, cols] * W^T + sum_k terms[k].h * terms[k].L^T without materializing
/// W: a fused decode-and-dot kernel for few tokens (T <= 8; on the GPU the terms included),
/// row slabs dequantized into a small buffer + gemm above. F32; x, y and the terms on the
/// weight's device.
LRQ_OP(packed_matmul, void,
       (const Packed& w, const Tensor& x, const Tensor& y, bool accumulate LRQ_DEFAULT(false),
        std::span<const LowRankTerm> terms LRQ_DEFAULT({})),
       (w, x, y, accumulate, terms), (&w.codes, &x, &y))

// ------------------------------------------------------------------ LoRDS matrices
/// out (F32 [w.rows(), w.cols()]) <- codebook[c_ij] * s_ij with s_ij = B_i . A_j evaluated in
/// F32 from the F16 factors (sum over k in order), one row at a time: S is never stored whole.
LRQ_OP(lords_dequantize, void, (const Lords& w, const Tensor& out), (w, out), (&w.codes, &out))
/// y[T, rows] (+)= x[T, cols] * W^T for the LoRDS W above, without materializing W or S:
/// each row (on the GPU, each tile) of S is formed from B and A inside the decode. F32 x, y.
LRQ_OP(lords_matmul, void,
       (const Lords& w, const Tensor& x, const Tensor& y, bool accumulate LRQ_DEFAULT(false)),
       (w, x, y, accumulate), (&w.codes, &x, &y))
/// The elementwise pass of LoRDS refinement for W and S (F32 [m, n]) and an ascending codebook
/// (F32 [K]): code c_ij = the entry nearest to W_ij / S_ij (ties to the lower entry; |S_ij| below
/// 1e-30 gives the entry nearest 0), q_ij = codebook[c_ij], D_ij = W_ij - q_ij S_ij. Writes the
/// codes (U8 [m, n]), D (F32 [m, n]) and G_ij = -2 h_j D_ij q_ij (F32 [m, n], the gradient of
/// the loss in S) where those tensors are defined, and returns the loss sum_ij h_j D_ij^2
/// (accumulated in F64 in a fixed order). h: F32 [n] column weights, undefined = all ones.
LRQ_OP(lords_assign, double,
       (const Tensor& W, const Tensor& S, const Tensor& codebook, const Tensor& h,
        const Tensor& codes, const Tensor& D, const Tensor& G),
       (W, S, codebook, h, codes, D, G), (&W, &S, &codebook, &h, &codes, &D, &G))
/// G_ij <- alpha * G_ij * codebook[c_ij] for G (F32 [m, n]) and codes (U8 [m, n]): the chain
/// rule from a residual's gradient to the scales' (LoRDS under a full-H objective).
LRQ_OP(scale_by_codebook, void,
       (const Tensor& G, const Tensor& codes, const Tensor& codebook, double alpha),
       (G, codes, codebook, alpha), (&G, &codes, &codebook))

// ------------------------------------------------------------------ optimization
/// One Adam step in place, all F32 and the same shape: m <- b1 m + (1 - b1) g,
/// v <- b2 v + (1 - b2) g^2, p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
/// Each element is updated alone, so the result does not depend on threads or launch shape.
LRQ_OP(adam_step, void,
       (const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const AdamParams& a),
       (p, g, m, v, a), (&p, &g, &m, &v))

#undef LRQ_OP
#undef LRQ_DEFAULT
