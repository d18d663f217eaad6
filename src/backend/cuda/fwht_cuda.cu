// Fast Walsh-Hadamard transform on the GPU: in place, normalized by 1/sqrt(block), blockwise.
//
// Stages of the transform commute (the Hadamard matrix is a Kronecker product), so a block
// larger than the shared-memory tile is done as the transform of each tile-sized piece in
// shared memory followed by one global-memory butterfly pass per remaining stride. Each element
// sees the same additions in the same order as on the CPU, then the same scaling.
#include <algorithm>
#include <cmath>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"

namespace lrq::cuda {
namespace {

constexpr int64_t kTile = 4096;       // largest piece transformed in shared memory (32 KiB F64)
constexpr int64_t kMinPerCta = 2048;  // small blocks are grouped so each CTA has this much work
constexpr int kMaxPerCta = 1024;      // pieces per CTA, bounding the table of their starts
constexpr int kThreads = 256;

// Geometry shared by both kernels: each row's transformed region starts at `skip * block` and
// holds `active` elements; `piece` is the size transformed as one unit.
struct Layout {
  int64_t n, active, offset, piece, pieces_per_row, total_pieces;
  __device__ int64_t piece_start(int64_t g) const {
    return (g / pieces_per_row) * n + offset + (g % pieces_per_row) * piece;
  }
};

// `per` consecutive pieces of size 2^log_piece per CTA: load, log_piece butterfly stages, store.
// Powers of two make every index a shift or a mask; each piece's start is computed once.
template <class T>
__global__ void fwht_shared_kernel(T* x, Layout L, int per, int log_piece, T scale) {
  extern __shared__ unsigned char smem[];
  T* s = reinterpret_cast<T*>(smem);
  __shared__ int64_t start[kMaxPerCta];
  const int64_t first = int64_t(blockIdx.x) * per;
  const int count = int(min(int64_t(per), L.total_pieces - first));
  for (int p = threadIdx.x; p < count; p += blockDim.x) start[p] = L.piece_start(first + p);
  __syncthreads();
  const int mask = (1 << log_piece) - 1, elems = count << log_piece;
  for (int e = threadIdx.x; e < elems; e += blockDim.x) s[e] = x[start[e >> log_piece] + (e & mask)];
  __syncthreads();
  for (int lh = 0; lh < log_piece; ++lh) {
    // Pair p of the concatenated pieces: since 2h divides the piece, pairs never straddle two.
    const int h = 1 << lh;
    for (int p = threadIdx.x; p < elems / 2; p += blockDim.x) {
      const int i = ((p >> lh) << (lh + 1)) | (p & (h - 1));
      const T a = s[i], b = s[i + h];
      s[i] = a + b;
      s[i + h] = a - b;
    }
    __syncthreads();
  }
  for (int e = threadIdx.x; e < elems; e += blockDim.x)
    x[start[e >> log_piece] + (e & mask)] = s[e] * scale;
}

// One butterfly stage of stride h (>= kTile) over every row's active region.
template <class T>
__global__ void fwht_stage_kernel(T* x, Layout L, int64_t rows, int64_t h, T scale) {
  const int64_t half = L.active / 2, total = rows * half;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = p / half, q = p % half;
    T* v = x + r * L.n + L.offset + (q / h) * 2 * h + q % h;
    const T a = v[0], b = v[h];
    v[0] = (a + b) * scale;
    v[h] = (a - b) * scale;
  }
}

template <class T>
void fwht_impl(const Tensor& X, int64_t block, int64_t skip) {
  const int64_t n = X.dim(-1), rows = X.numel() / n, nb = n / block;
  if (rows == 0 || skip >= nb) return;
  Layout L;
  L.n = n;
  L.offset = skip * block;
  L.active = (nb - skip) * block;
  L.piece = std::min(block, kTile);
  L.pieces_per_row = L.active / L.piece;
  L.total_pieces = rows * L.pieces_per_row;
  const T scale = T(1) / std::sqrt(T(block));
  const bool staged = block > kTile;
  const int per = int(std::clamp<int64_t>(kMinPerCta / L.piece, 1, kMaxPerCta));
  const int64_t ctas = (L.total_pieces + per - 1) / per;
  if (ctas > INT_MAX) bad_args("fwht_rows", "too many blocks in " + X.str());
  const size_t smem = size_t(per) * L.piece * sizeof(T);
  int log_piece = 0;
  while ((int64_t(1) << log_piece) < L.piece) ++log_piece;
  fwht_shared_kernel<T><<<unsigned(ctas), kThreads, smem, stream()>>>(X.data<T>(), L, per, log_piece,
                                                                      staged ? T(1) : scale);
  LRQ_CUDA_LAUNCHED();
  for (int64_t h = kTile; h < block; h <<= 1) {
    fwht_stage_kernel<T><<<grid_for(rows * L.active / 2, kThreads), kThreads, 0, stream()>>>(
        X.data<T>(), L, rows, h, 2 * h == block ? scale : T(1));
    LRQ_CUDA_LAUNCHED();
  }
}

}  // namespace

void fwht_rows(const Tensor& X, int64_t block, int64_t skip) {
  if (X.dim(-1) == 0) return;
  if (X.dtype() == DType::F32)
    fwht_impl<float>(X, block, skip);
  else
    fwht_impl<double>(X, block, skip);
}

}  // namespace lrq::cuda
