// Internal to src/lowrank: the residual E = A - L R shared by every method, and the rank-by-rank
// bookkeeping (curves, stop rule, trimming), so that each method only proposes pieces.
#pragma once
#include <algorithm>
#include <random>
#include <span>

#include "backend/ops.h"
#include "lowrank/lowrank.h"

namespace lrq::lowrank_detail {

class Extraction {
 public:
  /// A: m x n F32 (already weighted); `initial` its norm_stats. The residual is kept
  /// explicitly (a copy of A, deflated after each rank) when control.track_amax, otherwise
  /// applied implicitly as A X - L (R X).
  Extraction(const Tensor& A, ops::NormStats initial, int max_rank, const LowRankControl& control);

  /// The matrix being factored (before any deflation).
  const Tensor& matrix() const { return A_; }
  int64_t rows() const { return A_.dim(0); }
  int64_t cols() const { return A_.dim(1); }
  Device device() const { return A_.device(); }
  int rank() const { return rank_; }
  /// Ranks still allowed (0 once the stop rule ended extraction).
  int remaining() const { return done_ ? 0 : max_rank_ - rank_; }
  bool done() const { return done_; }

  /// out = alpha * E X: X an n-vector (out an m-vector) or n x b (out m x b).
  void apply(const Tensor& X, const Tensor& out, double alpha = 1) const;
  /// out = alpha * E^T Y: Y an m-vector (out an n-vector) or m x b (out n x b).
  void apply_t(const Tensor& Y, const Tensor& out, double alpha = 1) const;
  /// out (b x n) = Q^T E for Q (m x b).
  void project(const Tensor& Q, const Tensor& out) const;

  /// Appends the piece l r^T (l: m values, r: n values, F32, copied) of norm sigma. It must be
  /// q q^T E for a unit vector q, so that the squared residual drops by sigma^2. Then asks the
  /// stop rule. Returns false once extraction is over.
  bool push(const Tensor& l, const Tensor& r, double sigma);
  /// push for the rows of Lt (c x m) and R (c x n), c = sigma.size() <= remaining(), with one
  /// copy per factor instead of one per rank (no per-rank device work when the residual is
  /// implicit; the stop rule still sees every rank).
  bool push_rows(const Tensor& Lt, const Tensor& R, std::span<const double> sigma);

  /// The factors and curves; the Extraction is spent afterwards.
  LowRank finish();

 private:
  const Tensor& residual() const { return explicit_ ? E_ : A_; }
  // The bookkeeping of push once rank_ - 1's factors are in place: curves and the stop rule.
  bool record(double sigma);

  Tensor A_, E_;  // E_ only when explicit_
  Tensor Lt_, R_;  // max_rank x m (L transposed, so ranks append as rows), max_rank x n
  bool explicit_;
  int max_rank_, rank_ = 0;
  bool done_;
  double fro2_;  // squared Frobenius norm of the current residual
  StopRule stop_;
  std::vector<double> sigma_, fro_, amax_;
};

/// Standard normal F32 tensor. For the CPU drawn from `rng` (Box-Muller); for the GPU drawn on
/// the device by ops::fill_gaussian keyed with one output of `rng`, since host Box-Muller costs
/// milliseconds per sketch, more than the whole GPU factorization.
Tensor gaussian(Shape shape, std::mt19937_64& rng, Device device);
/// Euclidean norm of a vector (or Frobenius norm of any tensor).
double norm(const Tensor& v);

/// Orthonormal basis (m x s) of the residual's dominant range: Y = E Omega for a Gaussian
/// Omega (n x s), then `iters` rounds of Z = orth(E^T Y), Y = orth(E Z) (Halko et al.'s
/// subspace iteration). s <= min(m, n).
Tensor range_finder(const Extraction& ex, int64_t s, int iters, std::mt19937_64& rng);
/// Pushes the `count` leading singular triplets of the projected residual Q^T E (Q: m x s with
/// orthonormal columns) as pieces (Q u_i) s_i v_i^T. Returns false once extraction is over.
bool push_leading_triplets(Extraction& ex, const Tensor& Q, int64_t count);

// One per method, each in its own file; they push pieces until ex.done().
void factor_svd(Extraction& ex);
void factor_rsvd(Extraction& ex, const LowRankSpec& spec);
void factor_r1(Extraction& ex, const LowRankSpec& spec);
void factor_block(Extraction& ex, const LowRankSpec& spec);

}  // namespace lrq::lowrank_detail
