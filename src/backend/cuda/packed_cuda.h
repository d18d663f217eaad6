// CUDA kernels for PackedWeight (formats/packed_weight.h documents the bit layout): a fused
// decode-and-dot for decoding (T <= kPackedGemvMaxT tokens), row slabs dequantized to F32 for
// cuBLAS above that, plain dequantization, and packing of codes already on the GPU with the
// checks PackedWeight::pack makes (codes that fit, finite fp16 scales). Declared with plain
// types so formats/packed_weight.cpp, a host-compiler file, can call them; defined in packed_cuda.cu,
// built only with LRQ_WITH_CUDA.
#pragma once
#include <cstdint>
#include <functional>

namespace lrq::cuda {

/// A packed matrix as the kernels see it; every pointer is GPU memory.
struct PackedView {
  const uint8_t* codes = nullptr;     // [rows, cols * bits / 8], 8-byte aligned rows
  const uint16_t* scales = nullptr;   // F16 [rows, cols / group]
  const uint16_t* offsets = nullptr;  // F16 [rows, cols / group] (affine), else null
  const float* codebook = nullptr;    // F32 [2^bits] (codebook), else null
  int64_t rows = 0, cols = 0, group = 0;
  int bits = 0;    // 2, 3, 4 or 8
  int format = 0;  // QuantFormat order: 0 affine, 1 symmetric, 2 codebook
};

/// An extra term y += h L^T that the decode kernel adds in its epilogue.
struct GemvTerm {
  const void* L = nullptr;  // [rows, rank], F16 when L_f16 else F32
  bool L_f16 = true;
  const float* h = nullptr;  // F32 [T, rank]
  int64_t rank = 0;
};

constexpr int64_t kPackedGemvMaxT = 8;
constexpr int kPackedMaxTerms = 4;

/// y[T, rows] (+)= x[T, cols] W^T + sum_k h_k L_k^T in one kernel, for 1 <= T <=
/// kPackedGemvMaxT and at most kPackedMaxTerms terms. x and y F32, x 16-byte aligned. When there
/// are terms, the kernel is launched so that it overlaps the kernel that computed the last h
/// (programmatic dependent launch) and waits for it only before its epilogue.
void packed_gemv(const PackedView& w, const float* x, float* y, int64_t T, bool accumulate,
                 const GemvTerm* terms, int n_terms);
/// y[T, rows] (+)= x[T, cols] W^T for any T: 16 MiB row slabs dequantized to F32, then cuBLAS
/// (F32 compute; TF32 when set_allow_tf32 is on).
void packed_gemm(const PackedView& w, const float* x, float* y, int64_t T, bool accumulate);
/// y[T, rows] (+)= x[T, cols] W^T for a W that `dequant` writes in F32 row slabs (rows [r0,
/// r0 + n) into an [n, cols] buffer): the prefill path of every stored kind, 16 MiB slabs and
/// cuBLAS (F32 compute, TF32 when allowed, BF16 tensor cores under set_bf16_matmul).
void slab_gemm(int64_t rows, int64_t cols, const float* x, float* y, int64_t T, bool accumulate,
               const std::function<void(int64_t, int64_t, float*)>& dequant);
/// out[rows, cols] = W in F32 (16-byte aligned).
void packed_dequantize(const PackedView& w, float* out);

/// Encodes codes U8 [rows, cols] (cols a multiple of 32) into packed [rows, cols * bits / 8],
/// both on the GPU and 16-byte aligned, in the layout of formats/packed_weight.h, byte for byte what the
/// CPU encoder writes. Waits for the stream and returns -1 when every code is below 2^bits, else
/// the flat index of the first one that is not (its value in *bad_code); packed is then garbage.
int64_t packed_encode(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* packed,
                      int* bad_code);
/// Flat index of the first inf or NaN among n F16 values (GPU), or -1. Waits for the stream.
int64_t f16_first_nonfinite(const uint16_t* h, int64_t n);

/// Whether packed_gemv overlaps its low-rank producer (default on; benchmarks compare).
void set_packed_pdl(bool on);
/// The single-token kernel's rows per CTA (4 or 8) and chunk-loop unrolling (1 or 2); 0, 0
/// (the default) picks per width: R8 U2 at 3 bits, R4 U1 at 2, R4 U2 otherwise. Benchmarks
/// compare; the GPU tests run every variant.
void set_packed_gemv_variant(int rows, int unroll);
/// When T <= 2 decoding of 2/3/4-bit affine or symmetric weights with cols and group multiples
/// of 128 runs on the tensor cores (packed_mma_cuda.cu): Auto (the default) except with
/// low-rank terms at 2 and 4 bits, where the CUDA-core kernel above overlaps the terms' kernel
/// better; Always; Off.
enum class MmaUse { Off, Auto, Always };
/// How the tensor-core kernel runs; 0 keeps a field's default. Benchmarks compare; the GPU
/// tests run each setting's code path against the CPU.
struct MmaConfig {
  MmaUse use = MmaUse::Auto;
  // 16-row tiles per CTA: 1, 2 or 4 (default from 8192 rows: 4 for one token at 2 bits, else 2)
  int tiles = 0;
  int depth = 0;  // steps of codes in flight per warp: 1, 2 or 4 (default 2 from 8192 columns)
};
void set_packed_gemv_mma(const MmaConfig& config);
/// How many multiplications the tensor-core kernel has done (tests check the dispatch).
int64_t packed_gemv_mma_calls();

}  // namespace lrq::cuda
