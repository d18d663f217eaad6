// LoRDS: the format's fused kernels against the dense product, the refinement's gradients
// against F64 finite differences, exact recovery where it must hold, and the refinement's
// guarantees (never worse than its init; GPTQ assignment under H).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/ops.h"
#include "formats/lords_linear.h"
#include "quant/kernels/lords_refine.h"
#include "quant/kernels/nf_codebook.h"
#include "quant/objective.h"
#include "quant/recipe.h"
#include "test_util.h"

using namespace lrq;
using lrq::test::random_codes;
using lrq::test::randn;

namespace {

// Positive factors (a scale matrix is positive), F16-representable after rounding.
Tensor positive(Shape s, uint64_t seed) {
  Tensor t = randn(s, seed, 0.2, 0.6);
  for (int64_t e = 0; e < t.numel(); ++e) t.data<float>()[e] = std::fabs(t.data<float>()[e]) + 0.05f;
  return t.to(DType::F16).to(DType::F32);
}

// codebook[c] * (B_i . A_j) evaluated independently in F64.
std::vector<double> dense_f64(const Tensor& codes, const Tensor& B, const Tensor& A,
                              const Tensor& cb) {
  const int64_t m = codes.dim(0), n = codes.dim(1), r = A.dim(0);
  const Tensor Bf = B.to(DType::F32), Af = A.to(DType::F32);
  std::vector<double> w(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < r; ++k) s += double(Bf.data<float>()[i * r + k]) * Af.data<float>()[k * n + j];
      w[size_t(i * n + j)] = cb.data<float>()[codes.data<uint8_t>()[i * n + j]] * s;
    }
  return w;
}

}  // namespace

TEST(Lords, DequantizeAndMatmulAgreeWithTheDenseProductInF64) {
  for (int bits : {2, 3, 4, 8})
    for (int64_t r : {1, 3, 16}) {
      const int64_t m = 72, n = 320;
      const Tensor codes = random_codes(m, n, bits, 10 + bits);
      const Tensor B = positive({m, r}, 20 + r), A = positive({r, n}, 30 + r);
      const Tensor cb = nf_codebook(bits);
      const auto layer = LordsLinear::pack(codes, B, A, cb, bits);
      const std::vector<double> ref = dense_f64(codes, B, A, cb);
      const Tensor W = layer->dequantize();
      double max_rel = 0;
      for (int64_t e = 0; e < W.numel(); ++e)
        max_rel = std::max(max_rel, std::fabs(W.data<float>()[e] - ref[size_t(e)]) /
                                        (std::fabs(ref[size_t(e)]) + 1e-6));
      // r F32 fused multiply-adds of values near 0.5: a few units of 2^-24 each.
      EXPECT_LT(max_rel, 2e-6 * double(r)) << "bits " << bits << " r " << r;
      // The scalar and AVX2 rows evaluate the same fma chain: identical bits.
      ops::packed_force_scalar(true);
      const Tensor Ws = layer->dequantize();
      ops::packed_force_scalar(false);
      EXPECT_EQ(0, std::memcmp(W.raw(), Ws.raw(), W.nbytes())) << "bits " << bits << " r " << r;
      for (int64_t T : {1, 3, 8, 9, 40}) {
        const Tensor x = randn({T, n}, 40 + T);
        Tensor y = Tensor::empty({T, m});
        layer->forward(x, y);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = 0; i < m; ++i) {
            double yr = 0, mag = 0;
            for (int64_t j = 0; j < n; ++j) {
              yr += ref[size_t(i * n + j)] * x.data<float>()[t * n + j];
              mag += std::fabs(ref[size_t(i * n + j)] * x.data<float>()[t * n + j]);
            }
            ASSERT_NEAR(y.data<float>()[t * m + i], yr, 1e-5 * mag + 1e-6)
                << "bits " << bits << " r " << r << " T " << T << " row " << i;
          }
      }
    }
}

TEST(Lords, StorageIsCodesFactorsAndCodebook) {
  const int64_t m = 256, n = 512, r = lords_matched_rank(m, n, 128);
  EXPECT_EQ(r, 1);  // 256 * 512 / (128 * 768) = 1.33
  EXPECT_EQ(lords_matched_rank(4096, 4096, 128), 16);
  EXPECT_EQ(lords_matched_rank(11008, 4096, 128), 23);
  EXPECT_EQ(lords_matched_rank(1024, 4096, 128), 6);
  const auto l = LordsLinear::pack(random_codes(m, n, 3, 1), positive({m, 4}, 2),
                                   positive({4, n}, 3), nf_codebook(3), 3);
  EXPECT_EQ(l->storage_bytes(), size_t(m * n * 3 / 8 + (m + n) * 4 * 2 + 8 * 4));
}

TEST(Lords, BadTensorsAreErrorsNamingTheProblem) {
  const int64_t m = 32, n = 64;
  Tensor B = positive({m, 2}, 1).to(DType::F16), A = positive({2, n}, 2).to(DType::F16);
  Tensor codes = Tensor::empty({m, n * 3 / 8}, DType::U8);
  std::memset(codes.raw(), 0, codes.nbytes());
  Tensor badB = B.clone();
  badB.data<uint16_t>()[5] = 0x7E00;  // NaN
  try {
    LordsLinear l(ops::Lords{codes, nf_codebook(3), badB, A, 3}, "ck: layer x");
    FAIL() << "NaN in B accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("B contains inf or NaN at element 5"), std::string::npos) << e.what();
  }
  Tensor cb = nf_codebook(3).clone();
  std::swap(cb.data<float>()[1], cb.data<float>()[2]);
  EXPECT_THROW(LordsLinear(ops::Lords{codes, cb, B, A, 3}, "ck"), Error);
  EXPECT_THROW(LordsLinear(ops::Lords{codes, nf_codebook(3), B, A.rows(0, 1), 3}, "ck"), Error);
}

// The refinement's gradient in S (lords_assign, and scale_by_codebook after D H for the full
// objective) against central differences of the objective in F64, codes held fixed.
TEST(Lords, GradientsInTheScalesMatchFiniteDifferences) {
  const int64_t m = 6, n = 32;
  const Tensor W = randn({m, n}, 1, 0.05);
  const Tensor S = positive({m, n}, 2);
  const Tensor cb = nf_codebook(3);
  const Tensor X = randn({64, n}, 3);
  Tensor H = Tensor::empty({n, n}, DType::F64);
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b) {
      double s = 0;
      for (int64_t t = 0; t < 64; ++t) s += double(X.data<float>()[t * n + a]) * X.data<float>()[t * n + b];
      H.data<double>()[a * n + b] = s / 64;
    }
  Tensor h = Tensor::empty({n});
  for (int64_t j = 0; j < n; ++j) h.data<float>()[j] = float(H.data<double>()[j * n + j]);
  Tensor codes = Tensor::empty({m, n}, DType::U8), G = Tensor::empty({m, n}), D = Tensor::empty({m, n});
  ops::lords_assign(W, S, cb, h, codes, D, G);
  auto q = [&](int64_t e) { return double(cb.data<float>()[codes.data<uint8_t>()[e]]); };
  auto loss = [&](const std::vector<double>& s, bool full) {
    std::vector<double> d(size_t(m * n));
    for (int64_t e = 0; e < m * n; ++e) d[size_t(e)] = W.data<float>()[e] - q(e) * s[size_t(e)];
    double l = 0;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t a = 0; a < n; ++a) {
        if (!full) {
          l += h.data<float>()[a] * d[size_t(i * n + a)] * d[size_t(i * n + a)];
          continue;
        }
        for (int64_t b = 0; b < n; ++b)
          l += d[size_t(i * n + a)] * H.data<double>()[a * n + b] * d[size_t(i * n + b)];
      }
    return l;
  };
  Tensor Gfull = Tensor::empty({m, n});
  ops::gemm(D, false, H.to(DType::F32), false, Gfull);
  ops::scale_by_codebook(Gfull, codes, cb, -2.0);
  std::vector<double> s0(size_t(m * n));
  for (int64_t e = 0; e < m * n; ++e) s0[size_t(e)] = S.data<float>()[e];
  for (bool full : {false, true})
    for (int64_t e : {int64_t(0), int64_t(37), int64_t(m * n - 1)}) {
      const double eps = 1e-6;
      std::vector<double> sp = s0, sm = s0;
      sp[size_t(e)] += eps;
      sm[size_t(e)] -= eps;
      const double fd = (loss(sp, full) - loss(sm, full)) / (2 * eps);
      const double an = full ? Gfull.data<float>()[e] : G.data<float>()[e];
      EXPECT_NEAR(an, fd, 1e-4 * std::fabs(fd) + 1e-7) << (full ? "full" : "diag") << " at " << e;
    }
  // The returned loss is the diag objective.
  EXPECT_NEAR(ops::lords_assign(W, S, cb, h, Tensor(), Tensor(), Tensor()), loss(s0, false),
              1e-6 * loss(s0, false));
}

TEST(Lords, AdamStepMatchesTheFormulaInF64) {
  const Tensor p0 = randn({5, 7}, 1), g = randn({5, 7}, 2), m0 = randn({5, 7}, 3, 0.1);
  Tensor v0 = randn({5, 7}, 4, 0.1);
  for (int64_t e = 0; e < v0.numel(); ++e) v0.data<float>()[e] = std::fabs(v0.data<float>()[e]);
  Tensor p = p0.clone(), m = m0.clone(), v = v0.clone();
  ops::AdamParams a;
  a.lr = 0.01;
  a.step = 3;
  ops::adam_step(p, g, m, v, a);
  for (int64_t e = 0; e < p.numel(); ++e) {
    const double gm = g.data<float>()[e];
    const double mm = 0.9 * m0.data<float>()[e] + 0.1 * gm;
    const double vv = 0.999 * v0.data<float>()[e] + 0.001 * gm * gm;
    const double pe = p0.data<float>()[e] -
                      0.01 * (mm / (1 - std::pow(0.9, 3))) / (std::sqrt(vv / (1 - std::pow(0.999, 3))) + 1e-8);
    EXPECT_NEAR(p.data<float>()[e], pe, 1e-6 * (std::fabs(pe) + 1)) << e;
  }
}

// A W built as Q (.) S0 with S0 constant on blocks of n/r columns, each block row holding a
// codeword of magnitude 1 (so its absmax is its scale): init=exact recovers S0 exactly (up to
// rounding) and the nearest assignment recovers Q, so the result reproduces W.
TEST(Lords, ExactInitRecoversBlockScalesAndAWeightBuiltFromTheCodebook) {
  const int64_t m = 48, n = 256, r = 4, bs = n / r;
  const Tensor cb = nf_codebook(4);
  Tensor codes = random_codes(m, n, 4, 5);
  Tensor sb = positive({m, r}, 6);
  Tensor W = Tensor::empty({m, n});
  for (int64_t i = 0; i < m; ++i)
    for (int64_t b = 0; b < r; ++b) {
      codes.data<uint8_t>()[i * n + b * bs + (i + b) % bs] = 15;  // codebook value 1
      for (int64_t j = b * bs; j < (b + 1) * bs; ++j)
        W.data<float>()[i * n + j] = cb.data<float>()[codes.data<uint8_t>()[i * n + j]] * sb.data<float>()[i * r + b];
    }
  const LordsFactors f = lords_init(W, r, LordsOptions::Init::Exact, 128);
  Tensor S = Tensor::empty({m, n});
  ops::gemm(f.B, false, f.A, false, S);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      ASSERT_NEAR(S.data<float>()[i * n + j], sb.data<float>()[i * r + j / bs], 2e-6)
          << i << "," << j;
  LordsOptions o;
  o.bits = 4;
  o.rank = r;
  o.steps = 0;
  o.init = LordsOptions::Init::Exact;
  const LordsResult res = lords_quantize(W, Tensor(), o);
  EXPECT_EQ(0, std::memcmp(res.codes.raw(), codes.raw(), codes.nbytes()));
  EXPECT_LT(res.loss, 1e-9 * ops::norm_stats(W).sumsq);
  // init=block at blk = n/r is the same partition: also exact.
  o.init = LordsOptions::Init::Block;
  o.blk = bs;
  EXPECT_EQ(0, std::memcmp(lords_quantize(W, Tensor(), o).codes.raw(), codes.raw(), codes.nbytes()));
}

// Refinement keeps the best state, so it never ends above its init, and on a Gaussian weight
// it improves the paper's objective substantially; the weighted objectives likewise.
TEST(Lords, RefinementNeverEndsWorseThanItsInitAndImprovesIt) {
  const int64_t m = 64, n = 256;
  const Tensor W = randn({m, n}, 7, 0.02);
  const Tensor X = randn({512, n}, 8);
  Tensor H = Tensor::empty({n, n}, DType::F64);
  {
    Tensor Hf = Tensor::empty({n, n});
    ops::gemm(X, true, X, false, Hf, 1.0 / 512);
    for (int64_t e = 0; e < Hf.numel(); ++e) H.data<double>()[e] = Hf.data<float>()[e];
  }
  using O = LordsOptions::Objective;
  for (O obj : {O::Weight, O::Diag, O::Obs, O::Full})
    for (int bits : {2, 3}) {
      LordsOptions o;
      o.bits = bits;
      o.steps = 200;
      o.objective = obj;
      o.lr = 3e-3;
      const LordsResult r = lords_quantize(W, H, o);
      EXPECT_LE(r.loss, r.loss_init) << int(obj) << " bits " << bits;
      EXPECT_LT(r.loss, 0.97 * r.loss_init) << int(obj) << " bits " << bits;
      EXPECT_GT(r.best_step, 0);
    }
}

// GPTQ's assignment under a correlated H lowers the output error below nearest rounding with
// the same scales, and is kept.
TEST(Lords, GptqAssignmentLowersTheOutputError) {
  const int64_t m = 64, n = 128;
  const Tensor W = randn({m, n}, 11, 0.02);
  // Correlated inputs: x = z M with a mixing M.
  const Tensor Z = randn({1024, n}, 12), M = randn({n, n}, 13, 0.2);
  Tensor X = Tensor::empty({1024, n});
  ops::gemm(Z, false, M, false, X);
  Tensor Hf = Tensor::empty({n, n});
  ops::gemm(X, true, X, false, Hf, 1.0 / 1024);
  Tensor H = Hf.to(DType::F64);
  LordsOptions o;
  o.bits = 3;
  o.steps = 0;
  o.objective = LordsOptions::Objective::Full;
  const LordsResult near = lords_quantize(W, H, o);
  o.assign = LordsOptions::Assign::Gptq;
  const LordsResult g = lords_quantize(W, H, o);
  EXPECT_TRUE(g.gptq_kept);
  auto out_err = [&](const LordsResult& r) {
    const auto l = LordsLinear::pack(r.codes, r.B, r.A, r.codebook, 3);
    return hessian_error(difference(W, l->dequantize()), H);
  };
  EXPECT_LT(out_err(g), 0.8 * out_err(near));
}

// objective=obs weighs column j by 1 / [(H + lambda I)^-1]_jj: for a diagonal H that is
// H_jj + lambda, so it refines exactly as objective=diag on the shifted H.
TEST(Lords, ObsWeightsReduceToTheDiagonalForADiagonalH) {
  const int64_t m = 32, n = 64;
  const Tensor W = randn({m, n}, 21, 0.02);
  Tensor H = Tensor::zeros({n, n}, DType::F64);
  double mean = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double v = 0.5 + double((j * 37) % 11);  // varied column weights
    H.data<double>()[j * n + j] = v;
    mean += v / double(n);
  }
  LordsOptions o;
  o.steps = 30;
  o.damp = 0.25;
  o.objective = LordsOptions::Objective::Diag;
  const LordsResult d = lords_quantize(W, H, o);
  o.objective = LordsOptions::Objective::Obs;
  const LordsResult b = lords_quantize(W, H, o);
  Tensor Hs = H.clone();
  for (int64_t j = 0; j < n; ++j) Hs.data<double>()[j * n + j] += o.damp * mean;
  o.objective = LordsOptions::Objective::Diag;
  const LordsResult ds = lords_quantize(W, Hs, o);
  EXPECT_NEAR(b.loss, ds.loss, 1e-6 * ds.loss);
  EXPECT_NEAR(b.loss_init, ds.loss_init, 1e-6 * ds.loss_init);
  EXPECT_EQ(std::memcmp(b.codes.raw(), ds.codes.raw(), size_t(m * n)), 0);
  EXPECT_GT(std::fabs(b.loss_init - d.loss_init), 1e-3 * d.loss_init);  // the shift mattered
}

TEST(Lords, RecipeParsesWithShorthandsAndDefaults) {
  const Recipe r = parse_recipe("lords:b3");
  EXPECT_EQ(r.str(), "lords:b3");
  EXPECT_EQ(r.base().i("blk"), 128);
  EXPECT_EQ(r.base().i("steps"), 500);
  EXPECT_EQ(parse_recipe("lords:b2,r8,objective=full,assign=gptq,codebook=int").str(),
            "lords:b2,codebook=int,r8,objective=full,assign=gptq");
  EXPECT_THROW(parse_recipe("lords:b5"), Error);
  EXPECT_THROW(parse_recipe("lords:objective=hessian"), Error);
}
