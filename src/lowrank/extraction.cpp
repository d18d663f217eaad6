#include "lowrank/extraction.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lrq::lowrank_detail {

Extraction::Extraction(const Tensor& A, ops::NormStats initial, int max_rank,
                       const LowRankControl& control)
    : A_(A),
      explicit_(control.track_amax),
      max_rank_(max_rank),
      done_(max_rank == 0),
      fro2_(initial.sumsq),
      stop_(control.stop) {
  const Device dev = A.device();
  if (explicit_) E_ = A.clone();
  Lt_ = Tensor::empty({max_rank, rows()}, DType::F32, dev);
  R_ = Tensor::empty({max_rank, cols()}, DType::F32, dev);
  fro_.push_back(std::sqrt(fro2_));
  if (explicit_) amax_.push_back(initial.amax);
}

void Extraction::apply(const Tensor& X, const Tensor& out, double alpha) const {
  const bool vec = X.ndim() == 1;
  vec ? ops::gemv(residual(), false, X, out, alpha) : ops::gemm(residual(), false, X, false, out, alpha);
  if (explicit_ || rank_ == 0) return;
  const Tensor Lt = Lt_.rows(0, rank_), R = R_.rows(0, rank_);
  Tensor t = Tensor::empty(vec ? Shape{rank_} : Shape{rank_, X.dim(1)}, DType::F32, device());
  if (vec) {
    ops::gemv(R, false, X, t);
    ops::gemv(Lt, true, t, out, -alpha, 1);
  } else {
    ops::gemm(R, false, X, false, t);
    ops::gemm(Lt, true, t, false, out, -alpha, 1);
  }
}

void Extraction::apply_t(const Tensor& Y, const Tensor& out, double alpha) const {
  const bool vec = Y.ndim() == 1;
  vec ? ops::gemv(residual(), true, Y, out, alpha) : ops::gemm(residual(), true, Y, false, out, alpha);
  if (explicit_ || rank_ == 0) return;
  const Tensor Lt = Lt_.rows(0, rank_), R = R_.rows(0, rank_);
  Tensor t = Tensor::empty(vec ? Shape{rank_} : Shape{rank_, Y.dim(1)}, DType::F32, device());
  if (vec) {
    ops::gemv(Lt, false, Y, t);
    ops::gemv(R, true, t, out, -alpha, 1);
  } else {
    ops::gemm(Lt, false, Y, false, t);
    ops::gemm(R, true, t, false, out, -alpha, 1);
  }
}

void Extraction::project(const Tensor& Q, const Tensor& out) const {
  ops::gemm(Q, true, residual(), false, out);
  if (explicit_ || rank_ == 0) return;
  // Q^T (A - L R) = Q^T A - (Lt Q)^T R.
  const Tensor Lt = Lt_.rows(0, rank_), R = R_.rows(0, rank_);
  Tensor t = Tensor::empty({rank_, Q.dim(1)}, DType::F32, device());
  ops::gemm(Lt, false, Q, false, t);
  ops::gemm(t, true, R, false, out, -1, 1);
}

bool Extraction::push(const Tensor& l, const Tensor& r, double sigma) {
  LRQ_ASSERT(!done_ && l.numel() == rows() && r.numel() == cols());
  const int k = rank_++;
  Lt_.row(k).copy_from(l);
  R_.row(k).copy_from(r);
  return record(sigma);
}

bool Extraction::push_rows(const Tensor& Lt, const Tensor& R, std::span<const double> sigma) {
  const int64_t c = int64_t(sigma.size());
  LRQ_ASSERT(c <= remaining() && Lt.shape() == Shape({c, rows()}) && R.shape() == Shape({c, cols()}));
  if (explicit_) {  // every rank deflates E_ and measures it anyway
    for (int64_t i = 0; i < c; ++i)
      if (!push(Lt.row(i), R.row(i), sigma[size_t(i)])) return false;
    return !done_;
  }
  if (c == 0) return !done_;
  Lt_.rows(rank_, rank_ + c).copy_from(Lt);
  R_.rows(rank_, rank_ + c).copy_from(R);
  for (int64_t i = 0; i < c; ++i) {
    ++rank_;
    if (!record(sigma[size_t(i)])) return false;
  }
  return true;
}

bool Extraction::record(double sigma) {
  const int k = rank_ - 1;
  double amax = std::numeric_limits<double>::quiet_NaN();
  if (explicit_) {
    ops::gemm(Lt_.rows(k, k + 1), true, R_.rows(k, k + 1), false, E_, -1, 1);
    const ops::NormStats st = ops::norm_stats(E_);
    fro2_ = st.sumsq;
    amax = st.amax;
    amax_.push_back(amax);
  } else {
    // Rounding can push the difference of two nearly equal sums below zero.
    fro2_ = std::max(0.0, fro2_ - sigma * sigma);
  }
  sigma_.push_back(sigma);
  fro_.push_back(std::sqrt(fro2_));
  const StopDecision d =
      stop_ ? stop_(RankStep{rank_, sigma, fro_.back(), amax, fro_, amax_}) : StopDecision::Continue;
  if (d == StopDecision::StopDropLast) {
    // E_ still holds the dropped piece's deflation, but nothing reads it once done_.
    --rank_;
    sigma_.pop_back();
    fro_.pop_back();
    if (explicit_) amax_.pop_back();
  }
  done_ = d != StopDecision::Continue || rank_ == max_rank_;
  return !done_;
}

LowRank Extraction::finish() {
  LowRank out;
  out.L = Tensor::empty({rows(), rank_}, DType::F32, device());
  ops::transpose(Lt_.rows(0, rank_), out.L);
  // A view would keep the whole max_rank buffer alive.
  out.R = rank_ == max_rank_ ? R_ : R_.rows(0, rank_).clone();
  out.sigma = std::move(sigma_);
  out.residual_curve = std::move(fro_);
  out.amax_curve = std::move(amax_);
  return out;
}

Tensor gaussian(Shape shape, std::mt19937_64& rng, Device device) {
  // Box-Muller on the raw engine output: std::normal_distribution's algorithm differs between
  // standard libraries, and a seed should name the same sketch everywhere.
  if (device != Device::CPU) {
    Tensor t = Tensor::empty(std::move(shape), DType::F32, device);
    ops::fill_gaussian(t, rng());
    return t;
  }
  Tensor t = Tensor::empty(std::move(shape));
  float* p = t.data<float>();
  const int64_t n = t.numel();
  const double two_pi = 6.283185307179586, ulp = 0x1p-53;
  for (int64_t i = 0; i < n; i += 2) {
    const double u1 = double((rng() >> 11) + 1) * ulp;  // (0, 1]: log stays finite
    const double u2 = double(rng() >> 11) * ulp;
    const double r = std::sqrt(-2 * std::log(u1));
    p[i] = float(r * std::cos(two_pi * u2));
    if (i + 1 < n) p[i + 1] = float(r * std::sin(two_pi * u2));
  }
  return t.to(device);
}

double norm(const Tensor& v) { return std::sqrt(ops::norm_stats(v).sumsq); }

}  // namespace lrq::lowrank_detail
