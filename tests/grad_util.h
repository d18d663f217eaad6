// Helpers the gradient tests share (grad_test on the CPU, grad_gpu_test on the GPU,
// model_grad_test): random F64 inputs and block weights, the finite-difference step and budget,
// the relative error the budgets are stated in, and the scalar loss <out, G>.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "core/tensor.h"
#include "model/block_grad.h"
#include "model/config.h"

namespace lrq::test {

/// N(mean, sd^2) drawn in F64 from std::mt19937_64(seed), then converted to `t`.
inline Tensor rnd(Shape s, uint64_t seed, double sd = 1.0, double mean = 0.0,
                  DType t = DType::F64) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(mean, sd);
  Tensor x = Tensor::empty(std::move(s), DType::F64);
  for (int64_t i = 0; i < x.numel(); ++i) x.at<double>(i) = d(g);
  return x.to(t);
}

/// A host F64 copy.
inline Tensor f64(const Tensor& t) { return t.to(Device::CPU).to(DType::F64); }

/// max |got - want| / max(max |want|, floor); infinity when got holds a NaN. `floor` keeps a
/// gradient that cancels to round-off (attention's dq and dK at T = 1) from turning two
/// different round-offs into a relative error of 1.
inline double max_rel(const Tensor& got, const Tensor& want, double floor = 0) {
  const Tensor a = f64(got), b = f64(want);
  EXPECT_EQ(a.numel(), b.numel());
  double num = 0, den = floor;
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (!std::isfinite(a.at<double>(i))) return INFINITY;
    num = std::max(num, std::abs(a.at<double>(i) - b.at<double>(i)));
    den = std::max(den, std::abs(b.at<double>(i)));
  }
  return den > 0 ? num / den : num;
}

/// Prints a "[budget]" line (scripts/gpu_common.sh tabulates them) and checks err <= budget.
inline void within(const std::string& what, double err, double budget) {
  std::printf("[budget] %-62s err %.3e budget %.0e\n", what.c_str(), err, budget);
  EXPECT_LE(err, budget) << what;
}

/// sum_i a_i b_i in double: the scalar loss L = sum(out * G) whose gradient in out is G.
inline double inner(const Tensor& a, const Tensor& b) {
  const Tensor x = f64(a), y = f64(b);
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += x.at<double>(i) * y.at<double>(i);
  return s;
}

/// F64 analytic gradients against central differences of step kFdStep: the budget they meet.
constexpr double kFdBudget = 1e-7;
constexpr double kFdStep = 1e-5;

/// A block's nine tensors, random in F64: norms around 1, projections of sd 1/sqrt(in) so every
/// activation is of order one, q and k twice that (sharper attention than uniform).
inline BlockWeights random_block_weights(const ModelConfig& c, uint64_t seed) {
  BlockWeights w;
  w.attn_norm = rnd({c.hidden}, seed, 0.2, 1.0);
  w.mlp_norm = rnd({c.hidden}, seed + 1, 0.2, 1.0);
  const double sh = 1.0 / std::sqrt(double(c.hidden)), si = 1.0 / std::sqrt(double(c.intermediate));
  w.q = rnd({c.q_width(), c.hidden}, seed + 2, 2 * sh);
  w.k = rnd({c.kv_width(), c.hidden}, seed + 3, 2 * sh);
  w.v = rnd({c.kv_width(), c.hidden}, seed + 4, sh);
  w.o = rnd({c.hidden, c.q_width()}, seed + 5, sh);
  w.gate = rnd({c.intermediate, c.hidden}, seed + 6, sh);
  w.up = rnd({c.intermediate, c.hidden}, seed + 7, sh);
  w.down = rnd({c.hidden, c.intermediate}, seed + 8, si);
  return w;
}

}  // namespace lrq::test
