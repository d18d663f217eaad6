// LRQ: the scale parametrization's backward against F64 finite differences of its surrogate
// (rounding replaced by the identity, which is what the straight-through estimator
// differentiates), the init against an independent round-to-nearest, the packed export against
// the trained weight, and the block training on lab-s (loss lowered, perplexity and KLD better
// than its own init).
#include <cmath>
#include <random>

#include "calib/windows.h"
#include "eval/perplexity.h"
#include "formats/load_model.h"
#include "io/mapped_file.h"
#include "quant/kernels/lrq_scales.h"
#include "quant/pipeline.h"
#include "quant/recipe.h"
#include "grad_util.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace lrq {
namespace {

Tensor rnd64(Shape s, uint64_t seed, double sd) { return test::randn(std::move(s), seed, sd).to(DType::F64); }


// s1 = exp(d1) broadcast to every element of its group.
Tensor s1_of(const LrqScales& s) {
  const int64_t m = s.rows(), n = s.cols(), ng = s.params.d1.dim(1), gs = n / ng;
  Tensor out = Tensor::empty({m, n}, DType::F64);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      out.data<double>()[i * n + j] = std::exp(s.params.d1.data<double>()[i * ng + j / gs]);
  return out;
}

// The straight-through estimator differentiates W_hat = s1 (clamp(t) + D) with the rounding
// offset D = round-then-clamp minus clamp, held at its value at the base point (PyTorch's
// (round(x) - x).detach() + x): F(params) = <G, s1 clamp(t) + s1 D>.
double objective(const LrqScales& s, const Tensor& G, const Tensor& D) {
  const Tensor a = s.forward(false), s1 = s1_of(s);
  double f = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    f += G.data<double>()[i] * (a.data<double>()[i] + s1.data<double>()[i] * D.data<double>()[i]);
  return f;
}

}  // namespace

TEST(LrqScales, BackwardIsTheSurrogatesGradientInF64) {
  for (bool full : {false, true})
    for (int64_t group : {0, 32}) {
      SCOPED_TRACE(std::string(full ? "full" : "rank") + " group " + std::to_string(group));
      LrqOptions o;
      o.bits = 3;
      o.group = group;
      o.rank = full ? 0 : 5;
      o.full = full;
      const Tensor W = test::randn({24, 64}, 1, 0.05);
      LrqScales s = LrqScales::init(W, o, 7).as(DType::F64);
      // Move every parameter off its init so that all terms (L included) carry gradient.
      uint64_t seed = 100;
      for (Tensor* t : s.params.list()) {
        const Tensor d = rnd64(t->shape(), ++seed, 0.05);
        for (int64_t i = 0; i < t->numel(); ++i) t->data<double>()[i] += d.data<double>()[i];
      }
      const Tensor G = rnd64({24, 64}, 3, 1.0);
      Tensor D = s.forward(true);
      {
        const Tensor a = s.forward(false), s1 = s1_of(s);
        for (int64_t i = 0; i < D.numel(); ++i)
          D.data<double>()[i] = (D.data<double>()[i] - a.data<double>()[i]) / s1.data<double>()[i];
      }
      LrqParams g = s.params.zeros_like();
      s.backward(G, g);
      const auto params = s.params.list();
      const auto grads = g.list();
      ASSERT_EQ(params.size(), grads.size());
      for (size_t k = 0; k < params.size(); ++k) {
        const Tensor dir = rnd64(params[k]->shape(), 200 + k, 1.0);
        const double h = 1e-6;
        LrqScales plus = s, minus = s;
        for (LrqScales* x : {&plus, &minus}) *x->params.list()[k] = params[k]->clone();
        for (int64_t i = 0; i < dir.numel(); ++i) {
          plus.params.list()[k]->data<double>()[i] += h * dir.data<double>()[i];
          minus.params.list()[k]->data<double>()[i] -= h * dir.data<double>()[i];
        }
        const double fd = (objective(plus, G, D) - objective(minus, G, D)) / (2 * h);
        const double an = test::inner(*grads[k], dir);
        std::printf("[budget] lrq grad param %zu fd %.9e analytic %.9e\n", k, fd, an);
        EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::fabs(fd))) << "parameter " << k;
      }
    }
}

TEST(LrqScales, InitIsRoundToNearestOnTheSearchedGridAndPacksIt) {
  const Tensor W = test::randn({40, 96}, 2, 0.02);
  for (bool clip : {false, true}) {
    LrqOptions o;
    o.bits = 3;
    o.group = 32;
    o.clip = clip;
    const LrqScales s = LrqScales::init(W, o, 1);
    EXPECT_EQ(s.rank(), 10);  // min(40, 96) / 4
    const Tensor What = s.forward();
    // Independently: per group, the grid s, z of the min/max range (or the L_p-best fraction),
    // and w_hat = s clamp(round(w / s), -z, 7 - z). Without clip the grid is min/max; check
    // that every element is on a grid of 8 levels containing 0 and within half a step of w.
    double worst = 0;
    for (int64_t i = 0; i < 40; ++i)
      for (int64_t g = 0; g < 3; ++g) {
        const float sc = std::exp(s.params.d1.data<float>()[i * 3 + g]);
        float lo = 0, hi = 0;
        for (int64_t j = g * 32; j < (g + 1) * 32; ++j) {
          lo = std::min(lo, W.data<float>()[i * 96 + j]);
          hi = std::max(hi, W.data<float>()[i * 96 + j]);
        }
        for (int64_t j = g * 32; j < (g + 1) * 32; ++j) {
          const float w = W.data<float>()[i * 96 + j], v = What.data<float>()[i * 96 + j];
          const float level = v / sc;
          EXPECT_NEAR(level, std::nearbyint(level), 1e-4);
          if (!clip) worst = std::max(worst, double(std::fabs(w - v) / sc));
        }
        if (!clip) EXPECT_NEAR(sc, (hi - lo) / 7, 1e-3 * (hi - lo) / 7);
      }
    if (!clip) EXPECT_LE(worst, 0.51);
    // The packed weight is the trained one up to the F16 rounding of scale and offset.
    const Tensor D = s.pack().dequantize();
    double err = 0, ref = 0;
    for (int64_t i = 0; i < D.numel(); ++i) {
      err = std::max(err, double(std::fabs(D.data<float>()[i] - What.data<float>()[i])));
      ref = std::max(ref, double(std::fabs(What.data<float>()[i])));
    }
    EXPECT_LE(err, 2e-3 * ref) << "clip " << clip;
  }
  // The range search never does worse than min/max under its own L_p error.
  auto lp = [&](const Tensor& What) {
    double e = 0;
    for (int64_t i = 0; i < W.numel(); ++i)
      e += std::pow(std::fabs(double(W.data<float>()[i]) - What.data<float>()[i]), 2.4);
    return e;
  };
  LrqOptions o;
  o.bits = 3;
  o.group = 32;
  const double plain = lp(LrqScales::init(W, o, 1).forward());
  o.clip = true;
  const double searched = lp(LrqScales::init(W, o, 1).forward());
  EXPECT_LT(searched, plain);
}

TEST(Lrq, TrainingLowersEveryBlocksLossAndBeatsItsInit) {
  REQUIRE_SHARED();
  auto tok = load_tokenizer(test::repo("models/lab-s/tokenizer.model"));
  const auto calib = tokenize_files(*tok, {test::shared("data/lab-corpus/calib.txt")}, true);
  const auto windows = draw_windows(calib, 4, 64, 0, "calib");
  const auto eval_ids = tok->encode(read_text_file(test::shared("data/lab-corpus/valid.txt")), true);
  auto run = [&](const std::string& recipe, QuantizeReport* rep) {
    auto m = load_model(test::repo("models/lab-s"));
    QuantizeOptions o;
    o.recipe = parse_recipe(recipe);
    o.progress = false;
    *rep = quantize_model(*m, windows, o);
    EvalOptions eo;
    eo.max_windows = 6;
    eo.progress = false;
    return evaluate(*m, eval_ids, eo).ppl;
  };
  QuantizeReport r0, r1;
  const double p0 = run("lrq:w3,steps=0", &r0);
  const double p1 = run("lrq:w3,steps=20,lr=0.003", &r1);
  int blocks = 0;
  for (const auto& l : r1.layers)
    if (l.extra.contains("lrq_loss_before")) {
      ++blocks;
      EXPECT_LT(double(l.extra.at("lrq_loss_after")), 0.9 * double(l.extra.at("lrq_loss_before")))
          << l.name;
    }
  EXPECT_EQ(blocks, 4);
  EXPECT_LT(p1, p0);
  std::printf("lab-s lrq:w3 valid ppl (6 windows): init %.4f, 20 steps %.4f\n", p0, p1);
}

}  // namespace lrq
