// The linear-algebra seam. Every numerical primitive the model and the quantization methods
// need, with one CPU implementation (backend/cpu: OpenBLAS, LAPACK, OpenMP, AVX2) and one CUDA
// implementation (backend/cuda: cuBLAS, cuSOLVER, our kernels) side by side. Each op dispatches
// on the device of its tensors; all tensors of one call live on one device.
//
// The ops are declared from backend/op_list.h, the one list of them, where each is documented
// beside its entry (that file is the API reference). This header adds the types they take and
// the process-wide controls, which are not tensor ops.
#pragma once
#include <cstdint>
#include <span>

#include "core/tensor.h"

namespace lrq::ops {

struct NormStats {
  double sumsq = 0;  // sum of x^2 (accumulated in double); inf or NaN if any x is not finite
  double amax = 0;   // max |x| (NaN entries are skipped)
};

// ------------------------------------------------------------------ packed matrices
/// How a packed code becomes a value (formats/packed_weight.h gives the expressions; the
/// formats layer calls this QuantFormat).
enum class PackedFormat : uint8_t { Affine, Symmetric, Codebook };
/// Values per packed chunk; a chunk takes 4 * bits bytes (formats/format_traits.h pins both).
inline constexpr int64_t kPackedChunk = 32;

/// A packed matrix as the seam sees it: the stored tensors of a PackedWeight, all on one device.
/// The formats layer validates them; the ops check only what they index with.
struct Packed {
  Tensor codes;     // U8 [rows, cols * bits / 8]
  Tensor scales;    // F16 [rows, cols / group]
  Tensor offsets;   // F16 [rows, cols / group] (affine), else undefined
  Tensor codebook;  // F32 [2^bits] (codebook), else undefined
  int bits = 0;     // 2, 3, 4 or 8
  int64_t group = 0;
  PackedFormat format = PackedFormat::Affine;

  int64_t rows() const { return codes.dim(0); }
  int64_t cols() const { return codes.dim(1) / (4 * bits) * kPackedChunk; }
  int64_t ngroups() const { return cols() / group; }
};

/// An extra term h L^T that packed_matmul adds to its output: L [rows, r] (F16 or F32) and
/// h [T, r] (F32), on the weight's device. The GPU decode kernel fuses it.
struct LowRankTerm {
  Tensor L, h;
};

/// A LoRDS matrix (formats/lords_linear.h): W_ij = codebook[c_ij] * (B_i . A_j), the codes
/// packed in the layout of Packed (one group spanning the row), the scale matrix S = B A of low
/// rank r never stored. All tensors on one device.
struct Lords {
  Tensor codes;     // U8 [rows, cols * bits / 8]
  Tensor codebook;  // F32 [2^bits]
  Tensor B;         // F16 [rows, r]
  Tensor A;         // F16 [r, cols]
  int bits = 0;     // 2, 3, 4 or 8

  int64_t rows() const { return codes.dim(0); }
  int64_t cols() const { return codes.dim(1) / (4 * bits) * kPackedChunk; }
  int64_t rank() const { return A.dim(0); }
};

/// One Adam step's settings (adam_step). `step` counts from 1 (bias correction).
struct AdamParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t step = 1;
};

/// packed_encode's verdict on the codes: the flat index of the first code that does not fit
/// (-1 when all do) and its value.
struct PackedEncodeResult {
  int64_t bad = -1;
  int code = 0;
};

// ------------------------------------------------------------------ the ops
#define LRQ_DEFAULT(value) = value
#define LRQ_OP(name, ret, params, args, devices) ret name params;
#include "backend/op_list.h"

// ------------------------------------------------------------------ controls
/// CPU threads for our OpenMP loops (OpenBLAS always runs on one thread inside them); n <= 0:
/// every core. Under an address-space limit (ulimit -v) the count is lowered so that each
/// thread's BLAS buffer fits (OpenBLAS retries a failed buffer mmap forever: a hang). Returns
/// the count applied.
int set_num_threads(int n);
/// Lets F32 gemm/linear on the GPU round their inputs to TF32 (see cuda::set_allow_tf32);
/// returns the previous setting. No effect in a build without CUDA (returns false).
bool set_allow_tf32(bool allow);
/// Lets GPU prefill products and xtx round their activations to BF16 on the tensor cores
/// (cuda::set_bf16_matmul); returns the previous setting. No effect without CUDA (false).
bool set_bf16_matmul(bool on);
/// Makes the GPU's quantized-format kernels keep every weight x activation product exact
/// (cuda::set_exact_kernels) instead of the default 16-bit activation products; returns the
/// previous setting. The CPU kernels are always exact (false without CUDA).
bool set_exact_kernels(bool on);
/// Waits for every queued GPU operation (for honest stage timings); nothing on a CPU build.
void synchronize();
/// Forces the portable scalar packed kernels on the CPU even where AVX2+FMA+F16C is available
/// (tests compare the two paths; benchmarks measure both). Not thread-safe against concurrent
/// packed ops.
void packed_force_scalar(bool on);
/// True when the CPU packed ops use the AVX2 kernels.
bool packed_simd_active();

}  // namespace lrq::ops
