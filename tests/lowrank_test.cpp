// The low-rank library against matrices of known spectrum: residuals are computed explicitly in
// double (L R multiplied out), and the optimum sqrt(sum_{i>r} s_i^2) comes from the spectrum
// the matrix was built with (Eckart-Young).
#include <cmath>
#include <random>

#include "backend/ops.h"
#include "lowrank/lowrank.h"
#include "test_util.h"

using namespace lrq;

namespace {

const char* kMethods[] = {"svd", "rsvd", "r1", "block", "block:b=3,p=2"};

Tensor randn64(Shape s, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  Tensor t = Tensor::empty(s, DType::F64);
  for (int64_t i = 0; i < t.numel(); ++i) t.at<double>(i) = d(g);
  return t;
}

// U diag(s) V^T in F32 (built in F64) with random orthonormal U (m x k), V (n x k).
Tensor with_spectrum(int64_t m, int64_t n, const std::vector<double>& s, uint64_t seed) {
  const int64_t k = int64_t(s.size());
  Tensor U = randn64({m, k}, seed), V = randn64({n, k}, seed + 1);
  ops::orthonormalize_columns(U);
  ops::orthonormalize_columns(V);
  Tensor sv = Tensor::empty({k}, DType::F64);
  for (int64_t i = 0; i < k; ++i) sv.at<double>(i) = s[i];
  ops::scale(U, 1, Tensor(), sv);
  Tensor A = Tensor::empty({m, n}, DType::F64);
  ops::gemm(U, false, V, true, A);
  return A.to(DType::F32);
}

std::vector<double> harmonic(int k) {
  std::vector<double> s;
  for (int i = 1; i <= k; ++i) s.push_back(1.0 / i);
  return s;
}

double tail(const std::vector<double>& s, int r) {
  double t = 0;
  for (size_t i = r; i < s.size(); ++i) t += s[i] * s[i];
  return std::sqrt(t);
}

double fro(const Tensor& X) { return std::sqrt(ops::norm_stats(X.to(DType::F64)).sumsq); }

// A - L[:, :k] R[:k, :] in double.
Tensor residual(const Tensor& A, const LowRank& f, int k) {
  Tensor E = A.to(DType::F64).clone(), Lt = Tensor::empty({f.L.dim(1), f.L.dim(0)}, DType::F64);
  ops::transpose(f.L.to(DType::F64), Lt);
  ops::gemm(Lt.rows(0, k), true, f.R.to(DType::F64).rows(0, k), false, E, -1, 1);
  return E;
}
double residual_fro(const Tensor& A, const LowRank& f) { return fro(residual(A, f, f.rank())); }

bool same(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.at<float>(i) != b.at<float>(i)) return false;
  return true;
}

}  // namespace

TEST(LowRank, RecoversExactlyLowRankMatrix) {
  const std::vector<double> s{9, 7, 5, 4, 3, 2, 1};
  const Tensor A = with_spectrum(300, 200, s, 11);
  for (const char* m : kMethods) {
    SCOPED_TRACE(m);
    const LowRank f = low_rank(A, 7, LowRankSpec::parse(m));
    ASSERT_EQ(f.L.shape(), (Shape{300, 7}));
    ASSERT_EQ(f.R.shape(), (Shape{7, 200}));
    EXPECT_LT(residual_fro(A, f) / fro(A), 1e-4);
    // The Pythagorean curve estimate is only good to F32 rounding of ||A||^2.
    EXPECT_LT(f.residual_curve.back() / fro(A), 1e-3);
  }
}

TEST(LowRank, SubspaceMethodsFindTheSingularValues) {
  const std::vector<double> s{9, 7, 5, 4, 3, 2, 1};
  const Tensor A = with_spectrum(300, 200, s, 12);
  for (const char* m : {"svd", "rsvd", "block"}) {
    SCOPED_TRACE(m);
    const LowRank f = low_rank(A, 7, LowRankSpec::parse(m));
    for (int i = 0; i < 7; ++i) EXPECT_NEAR(f.sigma[i], s[i], 1e-4 * s[0]);
  }
}

TEST(LowRank, DecayingSpectrumNearOptimal) {
  // s_i = 1/i: no gap to help the power iterations. Bounds (observed range over seeds 1-10 in
  // brackets, on this construction): svd is the optimum up to F32 rounding; rsvd with p = 8,
  // q = 2 within 1% [1.0011, 1.0025]; the blocked sketch is the same step per block of 16
  // [1.0013, 1.0028], same bound. R1-Sketch (it = 2) keeps one vector per rank, so each rank
  // captures a weighted mean of the leading sigma_j^2 rather than sigma_1^2: 5% [1.010, 1.033];
  // with it = 1 it is [1.049, 1.060] and with it = 0 [1.54, 1.67], so the bound does bind.
  const std::vector<double> s = harmonic(200);
  const Tensor A = with_spectrum(300, 200, s, 13);
  const int r = 20;
  const double opt = tail(s, r);
  const std::pair<const char*, double> cases[] = {
      {"svd", 1.0001}, {"rsvd:p=8,q=2", 1.01}, {"block", 1.01}, {"r1:it=2", 1.05}};
  for (auto [m, bound] : cases) {
    SCOPED_TRACE(m);
    const double err = residual_fro(A, low_rank(A, r, LowRankSpec::parse(m)));
    EXPECT_GE(err, opt * (1 - 1e-5));  // nothing beats Eckart-Young
    EXPECT_LE(err, opt * bound);
  }
}

TEST(LowRank, StopRuleEndsExactlyWhereAsked) {
  const Tensor A = with_spectrum(300, 200, harmonic(200), 14);
  for (const char* m : kMethods) {
    SCOPED_TRACE(m);
    const LowRankSpec spec = LowRankSpec::parse(m);
    std::vector<int> seen;
    LowRankControl stop5, drop6;
    stop5.stop = [&](const RankStep& st) {
      seen.push_back(st.rank);
      return st.rank == 5 ? StopDecision::Stop : StopDecision::Continue;
    };
    drop6.stop = [](const RankStep& st) {
      return st.rank == 6 ? StopDecision::StopDropLast : StopDecision::Continue;
    };
    const LowRank a = low_rank(A, 20, spec, stop5), b = low_rank(A, 20, spec, drop6);
    EXPECT_EQ(seen, (std::vector<int>{1, 2, 3, 4, 5}));
    EXPECT_EQ(a.L.shape(), (Shape{300, 5}));
    EXPECT_EQ(a.R.shape(), (Shape{5, 200}));
    EXPECT_EQ(a.sigma.size(), 5u);
    EXPECT_EQ(a.residual_curve.size(), 6u);
    // Dropping rank 6 leaves exactly what stopping at 5 kept (same seed, same pieces).
    EXPECT_TRUE(same(a.L, b.L));
    EXPECT_TRUE(same(a.R, b.R));
    EXPECT_EQ(a.residual_curve, b.residual_curve);
  }
  // R1-Sketch extracts rank by rank, so stopping at 5 equals asking for 5.
  LowRankControl stop5;
  stop5.stop = [](const RankStep& st) { return st.rank == 5 ? StopDecision::Stop : StopDecision::Continue; };
  const LowRank a = low_rank(A, 20, LowRankSpec::parse("r1"), stop5), b = low_rank(A, 5, LowRankSpec::parse("r1"));
  EXPECT_TRUE(same(a.L, b.L));
  EXPECT_TRUE(same(a.R, b.R));
}

TEST(LowRank, CurvesMatchExplicitResiduals) {
  const Tensor A = with_spectrum(120, 90, harmonic(90), 15);
  const double a0 = fro(A);
  for (const char* m : kMethods) {
    SCOPED_TRACE(m);
    for (bool track : {false, true}) {
      LowRankControl ctl;
      ctl.track_amax = track;
      std::vector<RankStep> steps;
      std::vector<std::vector<double>> amax_seen;
      ctl.stop = [&](const RankStep& st) {
        steps.push_back(st);
        amax_seen.emplace_back(st.amax_curve.begin(), st.amax_curve.end());
        return StopDecision::Continue;
      };
      const LowRank f = low_rank(A, 12, LowRankSpec::parse(m), ctl);
      ASSERT_EQ(f.rank(), 12);
      ASSERT_EQ(steps.size(), 12u);
      ASSERT_EQ(f.amax_curve.size(), track ? 13u : 0u);
      for (int k = 0; k <= 12; ++k) {
        const Tensor E = residual(A, f, k);
        const ops::NormStats st = ops::norm_stats(E);
        // Tracked: the deflated F32 residual itself. Untracked: ||A||^2 - sum sigma^2.
        EXPECT_NEAR(f.residual_curve[k], std::sqrt(st.sumsq), (track ? 1e-5 : 1e-3) * a0) << k;
        if (track) {
          EXPECT_NEAR(f.amax_curve[k], st.amax, 1e-5 * f.amax_curve[0]) << k;
        }
        if (k == 0) continue;
        const RankStep& s = steps[k - 1];
        EXPECT_EQ(s.rank, k);
        EXPECT_EQ(s.sigma, f.sigma[k - 1]);
        EXPECT_EQ(s.residual_fro, f.residual_curve[k]);
        EXPECT_EQ(s.fro_curve.size(), size_t(k + 1));
        if (track) {
          EXPECT_EQ(s.residual_amax, f.amax_curve[k]);
          EXPECT_EQ(amax_seen[k - 1], std::vector<double>(f.amax_curve.begin(), f.amax_curve.begin() + k + 1));
        } else {
          EXPECT_TRUE(std::isnan(s.residual_amax));
          EXPECT_TRUE(s.amax_curve.empty());
        }
      }
    }
  }
}

TEST(LowRank, ColumnScaleFactorsTheWeightedProblem) {
  const int64_t m = 150, n = 100;
  const int r = 10;
  const Tensor A = with_spectrum(m, n, harmonic(100), 16);
  Tensor s = Tensor::empty({n});
  std::mt19937_64 g(17);
  std::lognormal_distribution<float> d(0, 1);
  for (int64_t j = 0; j < n; ++j) s.at<float>(j) = d(g);
  // The optimum of the weighted problem, from an independent F64 SVD of A diag(s).
  Tensor As = A.to(DType::F64).clone();
  ops::scale(As, 1, Tensor(), s.to(DType::F64));
  Tensor U = Tensor::empty({m, n}, DType::F64), S = Tensor::empty({n}, DType::F64),
         Vt = Tensor::empty({n, n}, DType::F64);
  ops::svd(As, U, S, Vt);
  std::vector<double> sv(S.data<double>(), S.data<double>() + n);
  const double opt = tail(sv, r);
  const Tensor s64 = s.to(DType::F64);
  auto weighted_error = [&](const LowRank& f) {
    Tensor E = residual(A, f, f.rank());
    ops::scale(E, 1, Tensor(), s64);
    return fro(E);
  };
  LowRankControl ctl;
  ctl.col_scale = s;
  // Quality bounds as in DecayingSpectrumNearOptimal; R1-Sketch's spread depends more on the
  // spectrum (7% above the optimum on this weighted one), and the semantics are the same code.
  for (auto [m_, bound] : {std::pair{"svd", 1.0001}, std::pair{"rsvd", 1.01}, std::pair{"block", 1.01}}) {
    SCOPED_TRACE(m_);
    const LowRank f = low_rank(A, r, LowRankSpec::parse(m_), ctl);
    const double err = weighted_error(f);
    EXPECT_GE(err, opt * (1 - 1e-5));
    EXPECT_LE(err, opt * bound);
    EXPECT_NEAR(f.residual_curve.back(), err, 1e-3 * f.residual_curve[0]);
  }
  // The unweighted factorization is far worse on the weighted error (1.48x here): the weights
  // were applied, and on the right side.
  EXPECT_GT(weighted_error(low_rank(A, r, LowRankSpec::parse("svd"))), 1.3 * opt);
}

TEST(LowRank, SameSeedSameFactors) {
  const Tensor A = with_spectrum(80, 60, harmonic(60), 18);
  for (const char* m : {"rsvd", "r1", "block"}) {
    SCOPED_TRACE(m);
    LowRankSpec spec = LowRankSpec::parse(m);
    spec.seed = 3;
    const LowRank a = low_rank(A, 6, spec), b = low_rank(A, 6, spec);
    EXPECT_TRUE(same(a.L, b.L));
    EXPECT_TRUE(same(a.R, b.R));
    spec.seed = 4;
    EXPECT_FALSE(same(a.L, low_rank(A, 6, spec).L));
  }
}

TEST(LowRank, ZeroMatrixAndZeroRank) {
  const Tensor Z = Tensor::zeros({40, 30});
  for (const char* m : kMethods) {
    SCOPED_TRACE(m);
    const LowRank f = low_rank(Z, 3, LowRankSpec::parse(m));
    ASSERT_EQ(f.rank(), 3);
    for (int64_t i = 0; i < f.L.numel(); ++i) ASSERT_TRUE(std::isfinite(f.L.at<float>(i)));
    for (int64_t i = 0; i < f.R.numel(); ++i) ASSERT_TRUE(std::isfinite(f.R.at<float>(i)));
    EXPECT_EQ(residual_fro(Z, f), 0);
    const LowRank e = low_rank(with_spectrum(40, 30, {2, 1}, 19), 0, LowRankSpec::parse(m));
    EXPECT_EQ(e.L.shape(), (Shape{40, 0}));
    EXPECT_EQ(e.R.shape(), (Shape{0, 30}));
    ASSERT_EQ(e.residual_curve.size(), 1u);
    EXPECT_NEAR(e.residual_curve[0], std::sqrt(5.0), 1e-5);
  }
}

TEST(LowRank, SixteenBitInput) {
  const std::vector<double> s = harmonic(100);
  const Tensor A = with_spectrum(150, 100, s, 20).to(DType::BF16);
  const Tensor Af = A.to(DType::F32);
  const LowRank f = low_rank(A, 10, LowRankSpec::parse("block")), g = low_rank(Af, 10, LowRankSpec::parse("block"));
  EXPECT_TRUE(same(f.L, g.L));
  EXPECT_TRUE(same(f.R, g.R));
}

TEST(LowRank, BadInputsAreErrors) {
  const Tensor A = with_spectrum(30, 20, {1, 0.5}, 21);
  const LowRankSpec spec;
  EXPECT_THROW(low_rank(A, 21, spec), Error);
  EXPECT_THROW(low_rank(A, -1, spec), Error);
  EXPECT_THROW(low_rank(A.reshape({2, 15, 20}), 1, spec), Error);
  EXPECT_THROW(low_rank(Tensor::zeros({30, 20}, DType::I32), 1, spec), Error);
  Tensor nan = A.clone();
  nan.at<float>(7) = std::nanf("");
  EXPECT_THROW(low_rank(nan, 1, spec), Error);
  for (float bad : {0.0f, -1.0f, INFINITY, 1e-40f}) {
    LowRankControl ctl;
    ctl.col_scale = Tensor::from(std::vector<float>(20, 1.0f), {20});
    ctl.col_scale.at<float>(3) = bad;
    EXPECT_THROW(low_rank(A, 1, spec, ctl), Error) << bad;
  }
  LowRankControl ctl;
  ctl.col_scale = Tensor::from(std::vector<float>(30, 1.0f), {30});
  EXPECT_THROW(low_rank(A, 1, spec, ctl), Error);
}

TEST(LowRankSpec, RoundTripsThroughStrings) {
  const std::pair<const char*, const char*> cases[] = {
      {"svd", "svd"},
      {"rsvd", "rsvd:p=8,q=2,seed=0"},
      {"rsvd:q=1", "rsvd:p=8,q=1,seed=0"},
      {"r1", "r1:it=2,seed=0"},
      {"r1:seed=18446744073709551615,it=5", "r1:it=5,seed=18446744073709551615"},
      {"block", "block:b=16,p=8,it=2,seed=0"},
      {"block:b=8,it=2", "block:b=8,p=8,it=2,seed=0"},
  };
  for (auto [in, canonical] : cases) {
    const LowRankSpec s = LowRankSpec::parse(in);
    EXPECT_EQ(s.to_string(), canonical);
    EXPECT_EQ(LowRankSpec::parse(s.to_string()), s);
  }
  EXPECT_EQ(LowRankSpec::parse("r1:it=3").iters, 3);
  EXPECT_EQ(LowRankSpec::parse("block:b=4,p=0").block, 4);
  EXPECT_EQ(LowRankSpec::parse("block:b=4,p=0").oversample, 0);
  // Options a method does not have do not make two specs differ.
  LowRankSpec a = LowRankSpec::parse("r1"), b = a;
  b.block = 99;
  EXPECT_EQ(a, b);
  b.iters = 3;
  EXPECT_FALSE(a == b);
}

TEST(LowRankSpec, BadSpecsNameTheProblem) {
  const std::pair<const char*, const char*> cases[] = {
      {"qr", "unknown method 'qr' (valid: svd, rsvd, r1, block)"},
      {"", "unknown method ''"},
      {"rsvd:k=3", "unknown option 'k' for rsvd (valid: p, q, seed)"},
      {"block:q=1", "unknown option 'q' for block (valid: b, p, it, seed)"},
      {"svd:p=1", "svd takes no options"},
      {"r1:", "expected key=value"},
      {"r1:it", "expected key=value"},
      {"r1:it=", "expected key=value"},
      {"r1:it=2,", "expected key=value"},
      {"r1:it=x", "'x' is not an integer in [0, 64]"},
      {"r1:it=-1", "not an integer in [0, 64]"},
      {"r1:it=65", "not an integer in [0, 64]"},
      {"r1:it=2.5", "not an integer"},
      {"block:b=0", "not an integer in [1, 65536]"},
      {"rsvd:seed=-1", "not an unsigned integer"},
      {"rsvd:p=1,p=2", "option 'p' given twice"},
  };
  for (auto [spec, msg] : cases) {
    try {
      LowRankSpec::parse(spec);
      ADD_FAILURE() << spec << " was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(msg), std::string::npos) << what;
      EXPECT_NE(what.find(std::string("low-rank spec '") + spec + "'"), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos);
    }
  }
}
