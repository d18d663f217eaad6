// The seam's matrix utilities (scale, transpose, norm_stats) against naive loops in double.
#include <cmath>
#include <limits>
#include <random>

#include "backend/ops.h"
#include "test_util.h"

using namespace lrq;

static Tensor randn(Shape s, uint64_t seed, DType t) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  Tensor x = Tensor::empty(s, DType::F64);
  for (int64_t i = 0; i < x.numel(); ++i) x.at<double>(i) = d(g);
  return x.to(t);
}

TEST(MatrixOps, ScaleRowsColumnsAndScalar) {
  for (DType t : {DType::F32, DType::F64}) {
    const Tensor X0 = randn({37, 53}, 1, t).to(DType::F64);
    const Tensor r = randn({37}, 2, DType::F64), c = randn({53}, 3, DType::F64);
    for (int mode = 0; mode < 4; ++mode) {
      const bool use_r = mode & 1, use_c = mode & 2;
      Tensor X = X0.to(t).clone();
      ops::scale(X, -1.5, use_r ? r.to(t) : Tensor(), use_c ? c.to(t) : Tensor());
      const Tensor Xd = X.to(DType::F64);
      for (int i = 0; i < 37; ++i)
        for (int j = 0; j < 53; ++j) {
          const double want = -1.5 * X0.at<double>(i * 53 + j) * (use_r ? r.at<double>(i) : 1) *
                              (use_c ? c.at<double>(j) : 1);
          EXPECT_NEAR(Xd.at<double>(i * 53 + j), want, t == DType::F32 ? 1e-5 * (1 + std::fabs(want)) : 1e-13);
        }
    }
  }
  // A vector is one row: its column scale has one value per entry.
  Tensor v = Tensor::from({1, 2, 3}, {3});
  ops::scale(v, 2, Tensor(), Tensor::from({1, 10, 100}, {3}));
  EXPECT_EQ(v.at<float>(0), 2);
  EXPECT_EQ(v.at<float>(1), 40);
  EXPECT_EQ(v.at<float>(2), 600);
}

TEST(MatrixOps, ScaleRejectsMismatchedVectors) {
  Tensor X = Tensor::zeros({4, 5});
  EXPECT_THROW(ops::scale(X, 1, Tensor::zeros({5})), Error);
  EXPECT_THROW(ops::scale(X, 1, Tensor(), Tensor::zeros({4})), Error);
  EXPECT_THROW(ops::scale(X, 1, Tensor(), Tensor::zeros({5}, DType::F64)), Error);
  EXPECT_THROW(ops::scale(Tensor::zeros({2, 2, 2}), 1), Error);
}

TEST(MatrixOps, TransposeMatchesIndexSwap) {
  // Sizes straddle the 32 x 32 tiles, including a single row and a single column.
  for (auto [m, n] : {std::pair{70, 45}, std::pair{1, 100}, std::pair{100, 1}, std::pair{64, 64}})
    for (DType t : {DType::F32, DType::F64}) {
      const Tensor A = randn({m, n}, 4, t);
      Tensor B = Tensor::empty({n, m}, t);
      ops::transpose(A, B);
      const Tensor Ad = A.to(DType::F64), Bd = B.to(DType::F64);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) ASSERT_EQ(Bd.at<double>(j * m + i), Ad.at<double>(i * n + j));
    }
  EXPECT_THROW(ops::transpose(Tensor::zeros({3, 4}), Tensor::zeros({3, 4})), Error);
}

TEST(MatrixOps, NormStatsMatchesDoubleLoop) {
  // Large enough for the parallel path; F32 squares are summed in double, so the sum of
  // squares matches the double loop to double rounding, not F32 rounding.
  for (DType t : {DType::F32, DType::F64}) {
    const Tensor X = randn({301, 257}, 5, t);
    const Tensor Xd = X.to(DType::F64);
    double s = 0, mx = 0;
    for (int64_t i = 0; i < Xd.numel(); ++i) {
      s += Xd.at<double>(i) * Xd.at<double>(i);
      mx = std::max(mx, std::fabs(Xd.at<double>(i)));
    }
    const ops::NormStats st = ops::norm_stats(X);
    EXPECT_NEAR(st.sumsq, s, 1e-12 * s);
    EXPECT_EQ(st.amax, mx);
  }
  Tensor v = Tensor::from({1, -7, std::numeric_limits<float>::quiet_NaN(), 2}, {4});
  const ops::NormStats st = ops::norm_stats(v);
  EXPECT_TRUE(std::isnan(st.sumsq));
  EXPECT_EQ(st.amax, 7);
}
