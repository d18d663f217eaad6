// The CPU linear-algebra seam against independent computations (naive loops in double).
#include <cmath>
#include <random>

#include "backend/ops.h"
#include "test_util.h"

using namespace lrq;

static Tensor randn(Shape s, uint64_t seed, DType t = DType::F64) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  Tensor x = Tensor::empty(s, DType::F64);
  for (int64_t i = 0; i < x.numel(); ++i) x.at<double>(i) = d(g);
  return x.dtype() == t ? x : x.to(t);
}

TEST(Linalg, GemmMatchesNaive) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor A = randn(ta ? Shape{7, 5} : Shape{5, 7}, 1), B = randn(tb ? Shape{3, 7} : Shape{7, 3}, 2);
      Tensor C = Tensor::zeros({5, 3}, DType::F64);
      ops::gemm(A, ta, B, tb, C);
      for (int i = 0; i < 5; ++i)
        for (int j = 0; j < 3; ++j) {
          double s = 0;
          for (int k = 0; k < 7; ++k)
            s += (ta ? A.at<double>(k * 5 + i) : A.at<double>(i * 7 + k)) *
                 (tb ? B.at<double>(j * 7 + k) : B.at<double>(k * 3 + j));
          EXPECT_NEAR(C.at<double>(i * 3 + j), s, 1e-12);
        }
    }
}

TEST(Linalg, CholeskyReconstructs) {
  for (DType t : {DType::F32, DType::F64}) {
    Tensor X = randn({40, 12}, 3), H = Tensor::zeros({12, 12}, DType::F64);
    ops::gemm(X, true, X, false, H);
    Tensor L = H.to(t).clone();
    ASSERT_TRUE(ops::cholesky(L));
    Tensor Ld = L.to(DType::F64), R = Tensor::zeros({12, 12}, DType::F64);
    ops::gemm(Ld, false, Ld, true, R);
    for (int i = 0; i < 144; ++i)
      EXPECT_NEAR(R.at<double>(i), H.at<double>(i), t == DType::F32 ? 1e-3 : 1e-10);
    for (int i = 0; i < 12; ++i)
      for (int j = i + 1; j < 12; ++j) EXPECT_EQ(Ld.at<double>(i * 12 + j), 0.0);
  }
  Tensor bad = Tensor::from({1, 2, 2, 1}, {2, 2});
  EXPECT_FALSE(ops::cholesky(bad));
}

TEST(Linalg, SpdInverseAndTrsm) {
  Tensor X = randn({30, 8}, 4), H = Tensor::zeros({8, 8}, DType::F64);
  ops::gemm(X, true, X, false, H);
  Tensor Hi = H.clone();
  ASSERT_TRUE(ops::spd_inverse(Hi));
  Tensor I = Tensor::zeros({8, 8}, DType::F64);
  ops::gemm(H, false, Hi, false, I);
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) EXPECT_NEAR(I.at<double>(i * 8 + j), i == j, 1e-10);
  Tensor L = H.clone();
  ASSERT_TRUE(ops::cholesky(L));
  Tensor B = randn({8, 3}, 5), Xs = B.clone();
  ops::trsm_lower(L, false, Xs);
  Tensor B2 = Tensor::zeros({8, 3}, DType::F64);
  ops::gemm(L, false, Xs, false, B2);
  for (int i = 0; i < 24; ++i) EXPECT_NEAR(B2.at<double>(i), B.at<double>(i), 1e-10);
  Xs = B.clone();
  ops::trsm_lower(L, true, Xs);
  ops::gemm(L, true, Xs, false, B2);
  for (int i = 0; i < 24; ++i) EXPECT_NEAR(B2.at<double>(i), B.at<double>(i), 1e-10);
}

TEST(Linalg, SvdReconstructsAndOrders) {
  for (auto shape : {Shape{9, 6}, Shape{6, 9}}) {
    Tensor A = randn(shape, 6);
    int64_t m = shape[0], n = shape[1], k = std::min(m, n);
    Tensor U = Tensor::empty({m, k}, DType::F64), S = Tensor::empty({k}, DType::F64),
           Vt = Tensor::empty({k, n}, DType::F64);
    ops::svd(A, U, S, Vt);
    for (int i = 0; i + 1 < k; ++i) EXPECT_GE(S.at<double>(i), S.at<double>(i + 1));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t r = 0; r < k; ++r) s += U.at<double>(i * k + r) * S.at<double>(r) * Vt.at<double>(r * n + j);
        EXPECT_NEAR(s, A.at<double>(i * n + j), 1e-10);
      }
  }
}

TEST(Linalg, EighDiagonalizes) {
  Tensor X = randn({20, 6}, 7), H = Tensor::zeros({6, 6}, DType::F64);
  ops::gemm(X, true, X, false, H);
  Tensor w = Tensor::empty({6}, DType::F64), V = Tensor::empty({6, 6}, DType::F64);
  ops::eigh(H, w, V);
  // H v_j = w_j v_j for each column j
  for (int j = 0; j < 6; ++j)
    for (int i = 0; i < 6; ++i) {
      double s = 0;
      for (int k = 0; k < 6; ++k) s += H.at<double>(i * 6 + k) * V.at<double>(k * 6 + j);
      EXPECT_NEAR(s, w.at<double>(j) * V.at<double>(i * 6 + j), 1e-9);
    }
}

TEST(Linalg, OrthonormalizeKeepsSpan) {
  Tensor A = randn({12, 4}, 8), Q = A.clone();
  ops::orthonormalize_columns(Q);
  Tensor G = Tensor::zeros({4, 4}, DType::F64);
  ops::gemm(Q, true, Q, false, G);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(G.at<double>(i * 4 + j), i == j, 1e-12);
  // A = Q (Q^T A): projection onto span(Q) reproduces A
  Tensor P = Tensor::zeros({4, 4}, DType::F64), A2 = Tensor::zeros({12, 4}, DType::F64);
  ops::gemm(Q, true, A, false, P);
  ops::gemm(Q, false, P, false, A2);
  for (int i = 0; i < 48; ++i) EXPECT_NEAR(A2.at<double>(i), A.at<double>(i), 1e-10);
}

TEST(Linalg, FwhtMatchesExplicitHadamard) {
  const int b = 8;
  Tensor X = randn({3, 24}, 9), Y = X.clone();
  ops::fwht_rows(Y, b, 1);  // first block untouched
  for (int r = 0; r < 3; ++r)
    for (int blk = 0; blk < 3; ++blk)
      for (int i = 0; i < b; ++i) {
        double s = 0;
        for (int j = 0; j < b; ++j) {
          int sign = __builtin_popcount(i & j) % 2 ? -1 : 1;  // Sylvester Hadamard entry
          s += sign * X.at<double>(r * 24 + blk * b + j);
        }
        double want = blk == 0 ? X.at<double>(r * 24 + i) : s / std::sqrt(double(b));
        EXPECT_NEAR(Y.at<double>(r * 24 + blk * b + i), want, 1e-12);
      }
  Tensor Z = Y.clone();
  ops::fwht_rows(Z, b, 1);  // involution
  for (int i = 0; i < 72; ++i) EXPECT_NEAR(Z.at<double>(i), X.at<double>(i), 1e-12);
  EXPECT_THROW(ops::fwht_rows(Y, 6), Error);
}

TEST(Linalg, LinearWithBf16WeightsMatchesF32) {
  Tensor W = randn({70, 48}, 10, DType::F32).to(DType::BF16), Wf = W.to(DType::F32);
  for (int64_t T : {1, 3, 9}) {
    Tensor x = randn({T, 48}, 11, DType::F32), y = Tensor::empty({T, 70}), y2 = Tensor::empty({T, 70});
    ops::linear(x, W, y);
    ops::linear(x, Wf, y2);
    for (int64_t i = 0; i < T * 70; ++i) EXPECT_NEAR(y.at<float>(i), y2.at<float>(i), 1e-4);
  }
}

TEST(Dtype, HalfConversionsRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    uint16_t v = uint16_t(h);
    float f = f16_to_f32(v);
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_f16(f), v) << h;
  }
  EXPECT_EQ(f32_to_f16(65520.f), 0x7c00);   // rounds to inf
  EXPECT_EQ(f32_to_f16(65519.f), 0x7bff);   // max finite
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);  // tie rounds to even
  EXPECT_EQ(f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
}

// ------------------------------------------------------------------ sketching primitives
TEST(Sketch, FillGaussianIsSplitMix64BoxMuller) {
  // Known answers: SplitMix64 seeded 0 starts 0xe220a8397b1dcdaf (the published reference
  // stream); Box-Muller of its halves and of output 5 under key 42, computed independently.
  Tensor x = Tensor::empty({7});
  ops::fill_gaussian(x, 0);
  EXPECT_NEAR(x.at<float>(0), -0.49457876630405073, 1e-6);
  EXPECT_NEAR(x.at<float>(1), 0.059566281642732144, 1e-6);
  Tensor y = Tensor::empty({3, 5});
  ops::fill_gaussian(y, 42);
  EXPECT_NEAR(y.at<float>(10), 0.04556665810647255, 1e-6);
  EXPECT_NEAR(y.at<float>(11), 0.5296464433352084, 1e-6);
  // Element i depends on (key, i) only, not on the tensor's size.
  Tensor z = Tensor::empty({4});
  ops::fill_gaussian(z, 42);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(z.at<float>(i), y.at<float>(i));
  // Moments of a large draw: mean 0, variance 1, fourth moment 3 (standard errors ~0.002, 0.003, 0.02).
  const int64_t n = 1 << 18;
  Tensor big = Tensor::empty({n});
  ops::fill_gaussian(big, 7);
  double m1 = 0, m2 = 0, m4 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = big.at<float>(i);
    m1 += v, m2 += v * v, m4 += v * v * v * v;
  }
  EXPECT_NEAR(m1 / n, 0, 0.01);
  EXPECT_NEAR(m2 / n, 1, 0.015);
  EXPECT_NEAR(m4 / n, 3, 0.1);
}

TEST(Sketch, GramIsATransposeA) {
  for (DType t : {DType::F32, DType::F64}) {
    Tensor A = randn({37, 9}, 11, t), G = Tensor::empty({9, 9}, DType::F64);
    ops::gram(A, G);
    Tensor a = A.to(DType::F64);
    for (int i = 0; i < 9; ++i)
      for (int j = 0; j < 9; ++j) {
        double s = 0;
        for (int r = 0; r < 37; ++r) s += a.at<double>(r * 9 + i) * a.at<double>(r * 9 + j);
        EXPECT_NEAR(G.at<double>(i * 9 + j), s, 1e-12 * 37);
      }
  }
}

TEST(Sketch, CholeskyQrOrthonormalizesAndDropsDependentColumns) {
  const int64_t m = 50, k = 6;
  for (DType t : {DType::F32, DType::F64}) {
    const double tol = t == DType::F32 ? 1e-6 : 1e-13;
    Tensor A = randn({m, k}, 12);
    // Column 3 = column 0 - 2 column 1: numerically dependent, must come out zero.
    for (int64_t r = 0; r < m; ++r)
      A.at<double>(r * k + 3) = A.at<double>(r * k + 0) - 2 * A.at<double>(r * k + 1);
    Tensor Q = A.to(t).clone();
    ops::cholesky_qr(Q, 2);
    Tensor q = Q.to(DType::F64), G = Tensor::zeros({k, k}, DType::F64), P = Tensor::zeros({k, k}, DType::F64);
    ops::gemm(q, true, q, false, G);
    ops::gemm(q, true, A, false, P);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        EXPECT_NEAR(G.at<double>(i * k + j), (i == j && i != 3) ? 1.0 : 0.0, 4 * tol) << i << "," << j;
        // Q^T A is upper triangular: column j of Q only spans A's columns 0..j.
        if (i > j) {
          EXPECT_NEAR(P.at<double>(i * k + j), 0, 40 * tol) << i << "," << j;
        }
      }
    // Span kept: A = Q Q^T A.
    Tensor A2 = Tensor::zeros({m, k}, DType::F64);
    ops::gemm(q, false, P, false, A2);
    for (int64_t i = 0; i < m * k; ++i) EXPECT_NEAR(A2.at<double>(i), A.at<double>(i), 40 * tol);
  }
  // One pass on an ill-conditioned block (every column nearly 1e4 times the same vector,
  // condition ~1e5) is visibly not orthonormal to F64 precision, two passes are: the second
  // pass is what the final basis needs.
  Tensor B = randn({m, k}, 13), b0 = randn({m, 1}, 14);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < k; ++j) B.at<double>(r * k + j) += 1e4 * b0.at<double>(r);
  auto orth_err = [&](int passes) {
    Tensor Q = B.clone(), G = Tensor::zeros({k, k}, DType::F64);
    ops::cholesky_qr(Q, passes);
    ops::gemm(Q, true, Q, false, G);
    double e = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) e = std::max(e, std::abs(G.at<double>(i * k + j) - (i == j)));
    return e;
  };
  EXPECT_GT(orth_err(1), 1e-10);
  EXPECT_LT(orth_err(2), 1e-13);
  Tensor wide = Tensor::empty({3, 4});
  EXPECT_THROW(ops::cholesky_qr(wide), Error);
}
