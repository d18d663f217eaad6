// CUDA implementations of the ops in backend/op_list.h (cuBLAS, cuSOLVER, kernels), declared
// from that list; built only with LRQ_WITH_CUDA. ops.cpp checks the arguments (backend/checks.h)
// and dispatches here on the tensors' device. Below the list: what only the GPU has.
#pragma once
#include <span>

#include "backend/ops.h"
#include "core/tensor.h"

// A definition whose signature drifts from the list declares a new overload and leaves the
// listed one undefined: the generated dispatch in ops.cpp then fails to link. (The CPU side
// makes it a compile error with -Wmissing-declarations; nvcc renames anonymous namespaces, so
// that warning would flag every file-local helper of the .cu files.)

namespace lrq::cuda {

using ops::LowRankTerm;
using ops::NormStats;
using ops::AdamParams;
using ops::Lords;
using ops::Packed;
using ops::PackedEncodeResult;

#define LRQ_OP(name, ret, params, args, devices) ret name params;
#include "backend/op_list.h"

/// Whether t's data starts on a 16-byte boundary (the kernels that read 16 bytes at a time).
inline bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw()) % 16 == 0; }

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
/// Keeps every weight x activation product of the quantized-format kernels exact (F32
/// activations; only the F32 accumulation rounds) instead of the default 16-bit activation
/// products (issue 26's contract; today the LoRDS decode and prefill kernels are the ones that
/// differ). Off unless switched on here (`--exact`, and the tests that compare with F64).
/// Returns the previous setting.
bool set_exact_kernels(bool on);
bool exact_kernels();
/// out[i] = x[i] rounded to BF16 (nearest even), n values, queued on stream().
void to_bf16(const float* x, uint16_t* out, int64_t n);
/// Column-major C (m x n, ld ldc) = op(A) op(B) + beta C with BF16 A and B, F32 C and F32
/// accumulation (the tensor-core path of set_bf16_matmul).
void gemm_bf16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace lrq::cuda
