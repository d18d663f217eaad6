// src/lowrank on CUDA tensors: every method recovers an exactly rank-r matrix, and on a matrix
// with a decaying spectrum its residual ||A - L R||_F stays within a stated factor of the CPU
// run's (the GPU draws its sketches on the device, so the factors are not the CPU's, only as
// good). Each check prints "[budget] <name> err <e> budget <b>".
#include <cmath>
#include <cstdio>
#include <random>
#include <string>

#include "backend/cuda/cuda_ops.h"
#include "backend/memory.h"
#include "backend/ops.h"
#include "compare_util.h"
#include "lowrank/lowrank.h"
#include "test_util.h"

using namespace lrq;

namespace {


using test::within;

Tensor randn(Shape s, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  Tensor x = Tensor::empty(std::move(s), DType::F64);
  for (int64_t i = 0; i < x.numel(); ++i) x.at<double>(i) = d(g);
  return x;
}

// U diag(s) V^T (m x n, F32 on the CPU) with orthonormal U (m x k), V (n x k) and s_i = decay^i.
Tensor with_spectrum(int64_t m, int64_t n, int64_t k, double decay, uint64_t seed) {
  Tensor U = randn({m, k}, seed), V = randn({n, k}, seed + 1), A = Tensor::zeros({m, n}, DType::F64);
  ops::orthonormalize_columns(U);
  ops::orthonormalize_columns(V);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) U.at<double>(i * k + j) *= std::pow(decay, double(j));
  ops::gemm(U, false, V, true, A);
  return A.to(DType::F32);
}

// ||A - L R||_F / ||A||_F in double on the host.
double rel_residual(const Tensor& A, const LowRank& lr) {
  Tensor a = A.to(Device::CPU).to(DType::F64), E = a.clone();
  ops::gemm(lr.L.to(Device::CPU).to(DType::F64), false, lr.R.to(Device::CPU).to(DType::F64), false, E, -1, 1);
  double e = 0, n = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    e += E.at<double>(i) * E.at<double>(i);
    n += a.at<double>(i) * a.at<double>(i);
  }
  return std::sqrt(e / n);
}

const char* kSpecs[] = {"svd", "rsvd:p=8,q=2,seed=3", "r1:it=2,seed=3", "block:b=16,p=8,it=2,seed=3",
                        "block:b=5,p=4,it=1,seed=3"};

}  // namespace

TEST(LowRankGpu, EveryMethodRecoversAnExactlyLowRankMatrix) {
  REQUIRE_GPU();
  cuda::set_allow_tf32(false);
  // Rank 24 exactly (spectrum 1 .. 0.9^23 = 0.089): every method must reach F32 rounding.
  const int64_t m = 300, n = 220, r = 24;
  const Tensor A = with_spectrum(m, n, r, 0.9, 5), Ag = A.to(Device::CUDA);
  for (const char* s : kSpecs) {
    const LowRankSpec spec = LowRankSpec::parse(s);
    const LowRank g = low_rank(Ag, int(r), spec);
    ASSERT_EQ(g.rank(), r) << s;
    EXPECT_EQ(g.L.device(), Device::CUDA) << s;
    EXPECT_EQ(g.R.device(), Device::CUDA) << s;
    within(std::string("exact rank-24 ") + s + " ||A-LR||/||A||", rel_residual(A, g), 2e-5);
    // Asking for more ranks than the matrix has must not break anything: the extra pieces
    // are (near) zero and the fit stays exact.
    const LowRank g2 = low_rank(Ag, int(r) + 6, spec);
    within(std::string("exact rank-24 at max_rank 30 ") + s, rel_residual(A, g2), 2e-5);
  }
}

TEST(LowRankGpu, ResidualMatchesCpuOnADecayingSpectrum) {
  REQUIRE_GPU();
  cuda::set_allow_tf32(false);
  // Full-rank spectrum 0.97^i: the CPU and GPU residuals at rank 20 must agree within 2%
  // (randomized methods: different sketches, same accuracy; two sketches of one method differ
  // by up to 0.6% here on the CPU), the exact SVD within 1e-4.
  const int64_t m = 400, n = 300;
  const Tensor A = with_spectrum(m, n, n, 0.97, 9), Ag = A.to(Device::CUDA);
  for (const char* s : kSpecs) {
    const LowRankSpec spec = LowRankSpec::parse(s);
    const double c = rel_residual(A, low_rank(A, 20, spec));
    const double g = rel_residual(A, low_rank(Ag, 20, spec));
    const double budget = spec.method == LowRankMethod::Svd ? 1e-4 : 2e-2;
    within(std::string("rank 20 GPU/CPU residual - 1, ") + s, std::abs(g / c - 1), budget);
  }
}

TEST(LowRankGpu, StopRuleAndCurvesWorkOnTheGpu) {
  REQUIRE_GPU();
  cuda::set_allow_tf32(false);
  // A stop rule that ends at rank 7 inside the first block; the residual curve's last value
  // must match the measured residual (the identity ||E_k+1||^2 = ||E_k||^2 - sigma_k^2).
  const Tensor A = with_spectrum(256, 192, 192, 0.9, 13), Ag = A.to(Device::CUDA);
  LowRankControl c;
  c.stop = [](const RankStep& st) { return st.rank == 7 ? StopDecision::Stop : StopDecision::Continue; };
  for (const char* s : kSpecs) {
    const LowRank g = low_rank(Ag, 30, LowRankSpec::parse(s), c);
    ASSERT_EQ(g.rank(), 7) << s;
    ASSERT_EQ(g.residual_curve.size(), 8u) << s;
    double n2 = 0;
    const Tensor a = A.to(DType::F64);
    for (int64_t i = 0; i < a.numel(); ++i) n2 += a.at<double>(i) * a.at<double>(i);
    within(std::string("curve vs measured residual ") + s,
           std::abs(g.residual_curve.back() / std::sqrt(n2) - rel_residual(A, g)), 1e-3);
  }
}
