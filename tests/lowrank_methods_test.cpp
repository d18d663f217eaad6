// FLRQ and LoPRo building blocks: R1-FLR's rank rule on matrices whose answer is known, BLC's
// monotonicity, and PackedLinear's runtime (permutation, block WHT, scales, mixed-precision
// low-rank parts) against the dense product of its dequantized weight.
#include <cmath>
#include <random>

#include "backend/ops.h"
#include "calib/stats.h"
#include "quant/kernels/flexible_rank.h"
#include "quant/method.h"
#include "quant/objective.h"
#include "formats/packed_linear.h"
#include "quant/kernels/rtn_grid.h"
#include "test_util.h"

namespace lrq {
namespace {

Tensor randn(int64_t r, int64_t c, uint64_t seed, double sd = 1.0) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd(0, sd);
  Tensor t = Tensor::empty({r, c});
  for (int64_t i = 0; i < r * c; ++i) t.data<float>()[i] = float(nd(g));
  return t;
}

// Statistics of inputs X (T x n) with unequal, correlated channels.
SiteStats stats_of(int64_t n, uint64_t seed) {
  Tensor X = randn(4096, n, seed), M = randn(n, n, seed + 1, 0.3), Y = Tensor::empty({4096, n});
  for (int64_t i = 0; i < n; ++i) M.data<float>()[i * n + i] += 1.0f;
  ops::gemm(X, false, M, false, Y);
  for (int64_t t = 0; t < 4096; ++t) Y.data<float>()[t * n + 3] *= 8.0f;
  SiteStats s(n);
  s.add(Y);
  s.finalize();
  return s;
}

TEST(R1Flr, ExactLowRankMatrixGetsItsRank) {
  // W = A diag(100, 20, 4) B of rank 3: each rank cuts amax by a large factor (precision
  // gain q >> storage growth k), and after 3 ranks the residual is zero, where it stops.
  Tensor A = randn(128, 3, 1), B = randn(3, 256, 2), W = Tensor::empty({128, 256});
  for (int64_t i = 0; i < 128; ++i) {
    A.data<float>()[i * 3 + 0] *= 100.0f;
    A.data<float>()[i * 3 + 1] *= 20.0f;
    A.data<float>()[i * 3 + 2] *= 4.0f;
  }
  ops::gemm(A, false, B, false, W);
  SiteStats st = stats_of(256, 3);
  FlexRankOptions o;
  o.x = 100;  // storage bound out of the way
  o.spec = LowRankSpec::parse("svd");
  LowRank lr = flexible_low_rank(W, st, o, 0);
  EXPECT_EQ(lr.rank(), 3);
}

TEST(R1Flr, StructurelessNoiseGetsNoRank) {
  // Gaussian noise: one rank lowers amax by a hair, so the precision gain q stays below the
  // storage growth k = 1 + 16 (m + n) / (d m n) and the first rank is rejected.
  Tensor W = randn(256, 256, 4);
  SiteStats st = stats_of(256, 5);
  FlexRankOptions o;
  o.act = 0;
  o.spec = LowRankSpec::parse("svd");
  EXPECT_EQ(flexible_low_rank(W, st, o, 0).rank(), 0);
}

TEST(R1Flr, StorageBoundCapsTheRank) {
  Tensor A = randn(128, 40, 6), B = randn(40, 256, 7), W = Tensor::empty({128, 256});
  ops::gemm(A, false, B, false, W);
  SiteStats st = stats_of(256, 8);
  FlexRankOptions o;  // x = 0.2, d = 3: r <= 0.2 * 3 * 128 * 256 / (16 * 384) = 3.2
  o.spec = LowRankSpec::parse("svd");
  EXPECT_LE(flexible_low_rank(W, st, o, 0).rank(), 3);
}

TEST(Blc, NeverReturnsAWorsePairThanItsStart) {
  Tensor W = randn(128, 256, 9, 0.02);
  for (int64_t i = 0; i < 128; ++i) W.data<float>()[i * 256 + 7] *= 20.0f;  // outlier column
  SiteStats st = stats_of(256, 10);
  Recipe r = parse_recipe("flrq:w2g128,epochs=6,x=1");
  Quantized q = make_method(r)->quantize(W, st, QuantJob{"t", 0});
  ASSERT_TRUE(q.extra.contains("blc_curve"));
  auto curve = q.extra["blc_curve"].get<std::vector<double>>();
  const double final_err = hessian_error(difference(W, q.layer->dequantize()), st.H());
  EXPECT_LE(final_err, curve[0] * (1 + 1e-6));
  EXPECT_NEAR(final_err / *std::min_element(curve.begin(), curve.end()), 1.0, 1e-4);
}

TEST(QuantLinearRuntime, TransformedLayerEqualsDenseProduct) {
  const int64_t m = 96, n = 256, r = 12;
  Tensor W = randn(m, n, 11);
  RtnOptions ro;
  ro.bits = 3;
  ro.group = 64;
  std::vector<int32_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = int32_t((i * 37 + 5) % n);  // 37 coprime to 256
  Tensor s = Tensor::empty({n});
  for (int64_t j = 0; j < n; ++j) s.data<float>()[j] = 0.5f + float(j % 7) / 4.0f;
  InputTransform t;
  t.scale(s.to(DType::F16)).permute(perm).hadamard(64, 1);
  std::vector<LowRankPart> parts = {
      LowRankPart::from_f32(randn(m, 8, 12, 0.1), randn(8, n, 13, 0.1), false),
      LowRankPart::from_f32(randn(m, r - 8, 14, 0.1), randn(r - 8, n, 15, 0.1), true)};
  PackedLinear q(rtn_quantize(W, ro), t, parts);
  EXPECT_EQ(q.rank(), r);
  Tensor Wd = q.dequantize();
  for (int64_t T : {1, 3, 40}) {
    Tensor x = randn(T, n, 16 + T), y = Tensor::empty({T, m}), ref = Tensor::empty({T, m});
    q.forward(x, y);
    Tensor x64 = x.to(DType::F64), W64 = Wd.to(DType::F64), r64 = Tensor::empty({T, m}, DType::F64);
    ops::gemm(x64, false, W64, true, r64);
    double num = 0, den = 0;
    for (int64_t i = 0; i < T * m; ++i) {
      num += std::pow(y.data<float>()[i] - r64.data<double>()[i], 2);
      den += std::pow(r64.data<double>()[i], 2);
    }
    EXPECT_LT(std::sqrt(num / den), 1e-5) << "T=" << T;
  }
}

TEST(LoproLayer, RuntimeEqualsDequantizedAndBeatsGptq) {
  const int64_t m = 128, n = 256;
  Tensor W = randn(m, n, 20, 0.02);
  for (int64_t i = 0; i < m; ++i) W.data<float>()[i * n + 3] *= 10.0f;
  SiteStats st = stats_of(n, 21);
  Recipe lr = parse_recipe("lopro:w2g128,block64,x=1");
  Quantized q = make_method(lr)->quantize(W, st, QuantJob{"t", 0});
  auto* ql = dynamic_cast<PackedLinear*>(q.layer.get());
  ASSERT_NE(ql, nullptr);
  ASSERT_TRUE(ql->transform().find<HadamardStage>() && ql->transform().find<PermuteStage>());
  EXPECT_EQ(ql->transform().find<HadamardStage>()->block(), 64);
  EXPECT_EQ(int64_t(ql->transform().find<PermuteStage>()->perm().size()), n);
  Tensor x = randn(5, n, 22), y = Tensor::empty({5, m}), ref = Tensor::empty({5, m});
  ql->forward(x, y);
  ops::gemm(x, false, ql->dequantize(), true, ref);
  for (int64_t i = 0; i < 5 * m; ++i)
    EXPECT_NEAR(y.data<float>()[i], ref.data<float>()[i], 1e-4 * (1 + std::fabs(ref.data<float>()[i])));
  Recipe g = parse_recipe("gptq:w2g128");
  Quantized b = make_method(g)->quantize(W, st, QuantJob{"t", 0});
  EXPECT_LT(hessian_error(difference(W, ql->dequantize()), st.H()),
            hessian_error(difference(W, b.layer->dequantize()), st.H()));
}

}  // namespace
}  // namespace lrq
