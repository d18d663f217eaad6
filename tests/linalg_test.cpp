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
