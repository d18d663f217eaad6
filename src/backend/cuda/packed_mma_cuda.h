// The tensor-core decode GEMV (packed_mma_cuda.cu), called by packed_gemv for the weights and
// token counts it takes.
#pragma once
#include <cstdint>

#include "backend/cuda/packed_cuda.h"

namespace lrq::cuda {

/// Whether packed_gemv runs this product on the tensor cores: 2, 3 or 4 bits, affine or
/// symmetric, cols and group multiples of 128, T <= 2, as set_packed_gemv_mma allows (the one
/// place that decides).
bool packed_gemv_mma_takes(const PackedView& w, int64_t T, int n_terms);
/// packed_gemv's contract, on the tensor cores, for what packed_gemv_mma_takes accepts;
/// `pdl`: launched to overlap the kernel before it (weights read early; x too with terms, whose
/// kernel before computes h = R x).
void packed_gemv_mma(const PackedView& w, const float* x, float* y, int64_t T, bool accumulate,
                     const GemvTerm* terms, int n_terms, bool pdl);

/// What packed_gemv_mma launches for `w` and T tokens under the current set_packed_gemv_mma
/// settings (grid 0: the CUDA-core kernel runs instead), with how many of its CTAs fit on one
/// SM (the occupancy calculator): benchmarks print it next to the times. Waves alone do not
/// predict the time (bench/NOTES.md, session 10), so the table explains rows, not defaults.
struct MmaLaunch {
  int tiles = 0, depth = 0;
  unsigned grid = 0;
  size_t smem = 0;  // per CTA, dynamic and static
  int ctas_per_sm = 0;
};
MmaLaunch packed_gemv_mma_launch(const PackedView& w, int64_t T, int n_terms);

#if defined(__CUDACC__)
/// The decode kernels' last step: y[t, row0 + r] (+)= sum over warps of red[w][r][t], one
/// thread per (r, t) of the CTA's ROWS x TT outputs; rows past `rows` and tokens past T are
/// not stored. Call after the __syncthreads that completes red.
template <int W, int ROWS, int TT>
__device__ __forceinline__ void store_row_sums(const float (&red)[W][ROWS][TT], float* y,
                                               int64_t rows, int64_t row0, int T,
                                               bool accumulate) {
  if (threadIdx.x >= ROWS * TT) return;
  const int r = threadIdx.x / TT, t = threadIdx.x % TT;
  const int64_t o = row0 + r;
  if (t >= T || o >= rows) return;
  float v = 0.f;
#pragma unroll
  for (int k = 0; k < W; ++k) v += red[k][r][t];
  float* dst = y + int64_t(t) * rows + o;
  *dst = accumulate ? *dst + v : v;
}
#endif

}  // namespace lrq::cuda
