// Low-rank factorization A ~= L R with a caller-controlled rank. One entry point, four methods.
//
// Every method extracts the factors rank by rank from the residual E_k = A - L_k R_k, and
// every piece it appends is a left projection of the current residual, q q^T E_k with q a unit
// vector, whose norm sigma_k is the singular-value estimate of that rank. Hence
// ||E_{k+1}||_F^2 = ||E_k||_F^2 - sigma_k^2 exactly (in exact arithmetic), and a stop rule
// (FLRQ's R1-FLR) sees the residual after each rank and may end extraction at any rank.
//
// Methods, as spec strings (LowRankSpec::to_string prints every option):
//   svd                        exact truncated SVD (ops::svd): the optimal residual, the
//                              reference. Costs a full SVD whatever the rank.
//   rsvd:p=8,q=2,seed=0        randomized SVD (Halko, Martinsson and Tropp 2011): a Gaussian
//                              sketch of max_rank + p columns, q power iterations
//                              re-orthonormalized every half step, then an SVD of the projection.
//   r1:it=2,seed=0             R1-Sketch (FLRQ): per rank, one Gaussian vector s, the power
//                              iteration (E E^T)^it E s renormalized after every product, then
//                              k = E^T u; piece u k^T. 2*it + 2 matrix-vector products per rank.
//   block:b=16,p=8,it=2,seed=0 blocked adaptive sketch: per block of b ranks, the rsvd step on
//                              the deflated residual (b + p Gaussian columns, it power
//                              iterations, small SVD), keeping its b leading triplets. Costs
//                              2*it + 2 matrix products with b + p columns per block: R1-Sketch's
//                              adaptivity at GEMM speed.
// svd and rsvd compute all max_rank ranks up front, so for them a stop rule only truncates; r1
// and block stop computing. Randomized methods are deterministic for a given seed and device:
// on the CPU the sketches are std::mt19937_64 + Box-Muller; on the GPU one output of that engine
// keys ops::fill_gaussian on the device (host generation would cost more than the whole GPU
// factorization), so CPU and GPU factors differ, with the same accuracy. On the GPU, rsvd and
// block orthonormalize by Cholesky QR and take the projected SVD from a k x k Gram matrix
// (see subspace.cpp); the CPU keeps Householder QR and LAPACK's SVD.
//
// Everything runs through backend/ops.h, so the factors live on A's device.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace lrq {

/// The result: A ~= L R. Curves are indexed by rank k = 0..rank().
struct LowRank {
  Tensor L;                           // m x r, F32
  Tensor R;                           // r x n, F32
  std::vector<double> sigma;          // r: singular-value estimate of each rank, in order
  std::vector<double> residual_curve; // r + 1: ||E_k||_F (estimated, see LowRankControl)
  std::vector<double> amax_curve;     // r + 1: max |E_k| when track_amax, else empty
  int rank() const { return int(sigma.size()); }
};

/// What a stop rule sees after each extracted rank.
struct RankStep {
  int rank = 0;                       // ranks kept so far, the latest included (>= 1)
  double sigma = 0;                   // singular-value estimate of the latest rank
  double residual_fro = 0;            // ||E_rank||_F
  double residual_amax = 0;           // max |E_rank|; NaN unless track_amax
  std::span<const double> fro_curve;  // ||E_k||_F for k = 0..rank
  std::span<const double> amax_curve; // max |E_k| for k = 0..rank; empty unless track_amax
};

enum class StopDecision {
  Continue,      // extract the next rank (if max_rank allows)
  Stop,          // keep the latest rank and stop
  StopDropLast,  // drop the latest rank and stop (the result has rank - 1)
};
using StopRule = std::function<StopDecision(const RankStep&)>;

/// Per-call controls (not part of the method's spec string).
struct LowRankControl {
  /// Called after every extracted rank, including the last one allowed by max_rank.
  StopRule stop;
  /// Form the residual explicitly (a copy of A, updated after each rank: two more passes over
  /// m x n per rank) to report its max |entry| and its exact Frobenius norm. Without it the
  /// Frobenius norm is sqrt(||A||^2 - sum sigma_k^2), which in F32 is accurate to about
  /// 1e-3 ||A||_F: fine for a stop rule, not for measuring a near-exact fit.
  bool track_amax = false;
  /// Optional input-channel weights s (n positive finite values, any float dtype): the method
  /// factors A diag(s), minimizing ||(A - L R) diag(s)||_F, and returns R diag(1/s) as R, so
  /// L R still approximates A. The curves and RankStep values refer to the weighted residual
  /// (A - L R) diag(s).
  Tensor col_scale;
};

enum class LowRankMethod { Svd, Rsvd, R1, Block };

/// A method and its options, parsed from / printed to a short string ("rsvd:p=8,q=2").
struct LowRankSpec {
  LowRankMethod method = LowRankMethod::Svd;
  int oversample = 8;  // p: extra sketch columns (rsvd, block)
  int iters = 2;       // q (rsvd) / it (r1, block): power iterations
  int block = 16;      // b: ranks per block (block)
  uint64_t seed = 0;   // Gaussian sketches (rsvd, r1, block)

  /// Parses "<method>[:key=value,...]"; missing options keep their defaults. Throws Error
  /// naming the spec and listing the valid methods or options on any problem.
  static LowRankSpec parse(std::string_view text);
  /// Canonical string with every option of the method; parse(to_string()) == *this.
  std::string to_string() const;
  /// Same method and same values of that method's options (the others are ignored).
  bool operator==(const LowRankSpec& o) const;
};

/// Factors A (m x n, F32/F64/F16/BF16, any device) as L (m x r) R (r x n) in F32 with
/// r <= max_rank <= min(m, n); r < max_rank only when control.stop ends extraction early.
/// Throws Error on a bad max_rank, non-finite entries in A, or a bad col_scale.
LowRank low_rank(const Tensor& A, int max_rank, const LowRankSpec& spec,
                 const LowRankControl& control = {});

}  // namespace lrq
