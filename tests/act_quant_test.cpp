// Activation quantization (recipe options a8, a8=tensor, kv8, smooth=ALPHA): the fake
// quantizers against hand computations and an F64 reference, a8 in the model against an
// independent reference wrapped around every projection, SmoothQuant's folding leaving the
// full-precision function unchanged, the settings surviving save and load bit for bit, the
// errors users see, and the same bytes with 1 and 2 threads.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "calib/windows.h"
#include "eval/perplexity.h"
#include "formats/load_model.h"
#include "formats/save.h"
#include "io/mapped_file.h"
#include "quant/activations.h"
#include "quant/pipeline.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace lrq {
namespace {

// The per-token quantizer written out in double, independently of the backend: row min and
// max, step = (max - min) / (2^b - 1), zero = round-half-even(-min / step), codes clamped to
// [0, 2^b - 1].
std::vector<double> reference_rows(const std::vector<double>& x, int64_t rows, int64_t n,
                                   int bits) {
  std::vector<double> out(x);
  const double maxq = std::ldexp(1.0, bits) - 1;
  for (int64_t r = 0; r < rows; ++r) {
    const auto b = x.begin() + r * n, e = b + n;
    const double lo = *std::min_element(b, e), hi = *std::max_element(b, e);
    if (hi == lo) continue;
    const double step = (hi - lo) / maxq, zero = std::nearbyint(-lo / step);
    for (int64_t j = 0; j < n; ++j) {
      const double q = std::clamp(std::nearbyint(x[r * n + j] / step) + zero, 0.0, maxq);
      out[r * n + j] = (q - zero) * step;
    }
  }
  return out;
}

std::vector<float> values(const Tensor& t) {
  const Tensor h = t.to(Device::CPU);
  return std::vector<float>(h.data<float>(), h.data<float>() + h.numel());
}

TEST(ActQuant, PerTokenQuantizerMatchesHandComputation) {
  // Two bits on [-1, 3]: step 4/3, zero = rint(0.75) = 1; codes 0 1 1 3 -> -4/3 0 0 8/3.
  Tensor x = Tensor::from({-1.0f, 0.0f, 0.5f, 3.0f}, {1, 4});
  ops::fake_quant_rows(x, 2);
  const auto v = values(x);
  EXPECT_FLOAT_EQ(v[0], -4.0f / 3.0f);
  EXPECT_EQ(v[1], 0.0f);
  EXPECT_EQ(v[2], 0.0f);
  EXPECT_FLOAT_EQ(v[3], 8.0f / 3.0f);
  // Eight bits on [0.5, 3.05], every value positive: step 0.01, zero = -50 (unclamped), so the
  // grid is 0.5, 0.51, ... and 1.234 lands on 1.23, 3.05 on itself.
  Tensor y = Tensor::from({0.5f, 1.234f, 3.05f, 2.0f}, {1, 4});
  ops::fake_quant_rows(y, 8);
  const auto w = values(y);
  EXPECT_NEAR(w[0], 0.5, 1e-6);
  EXPECT_NEAR(w[1], 1.23, 1e-6);
  EXPECT_NEAR(w[2], 3.05, 1e-6);
  EXPECT_NEAR(w[3], 2.0, 1e-6);
  // A constant row is exact as it is.
  Tensor c = Tensor::from({0.7f, 0.7f, 0.7f}, {1, 3});
  ops::fake_quant_rows(c, 8);
  for (float f : values(c)) EXPECT_EQ(f, 0.7f);
}

TEST(ActQuant, PerTokenQuantizerMatchesF64Reference) {
  const int64_t rows = 37, n = 96;
  const Tensor x = test::randn({rows, n}, 11, 2.0);
  const auto xv = values(x);
  std::vector<double> xd(xv.begin(), xv.end());
  // Rows with different offsets: all positive, all negative, mixed.
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const float shifted = float(xd[r * n + j] + double(r % 3 - 1) * 5.0);
      x.at<float>(r * n + j) = shifted;
      xd[r * n + j] = shifted;
    }
  for (int bits : {8, 4}) {
    Tensor q = x.clone();
    ops::fake_quant_rows(q, bits);
    const auto ref = reference_rows(xd, rows, n, bits);
    double worst = 0, moved = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const auto b = xd.begin() + r * n;
      const double step =
          (*std::max_element(b, b + n) - *std::min_element(b, b + n)) / (std::ldexp(1.0, bits) - 1);
      for (int64_t j = 0; j < n; ++j) {
        worst = std::max(worst, std::abs(q.at<float>(r * n + j) - ref[r * n + j]) / step);
        moved = std::max(moved, std::abs(q.at<float>(r * n + j) - xd[r * n + j]) / step);
      }
    }
    // Only F32 rounding separates the two (a code off by one would be 1 step).
    EXPECT_LT(worst, 1e-4) << bits << " bits";
    // Values really are moved onto the grid, by at most half a step.
    EXPECT_GT(moved, 0.3) << bits << " bits";
    EXPECT_LE(moved, 0.5 + 1e-4) << bits << " bits";
  }
}

TEST(ActQuant, StaticQuantizerMatchesHandComputation) {
  Tensor x = Tensor::from({0.26f, -0.74f, 100.0f, -100.0f, 0.25f, 0.75f}, {6});
  ops::fake_quant_tensor(x, 0.5f, 8);
  // rint(0.52) = 1, rint(-1.48) = -1, 200 -> 127, -200 -> -128, ties to even: 0.5 -> 0, 1.5 -> 2.
  const std::vector<float> want = {0.5f, -0.5f, 63.5f, -64.0f, 0.0f, 1.0f};
  EXPECT_EQ(values(x), want);
  Tensor bad = Tensor::from({1.0f}, {1});
  EXPECT_THROW(ops::fake_quant_tensor(bad, 0.0f, 8), Error);
  EXPECT_THROW(ops::fake_quant_tensor(bad, std::nanf(""), 8), Error);
}

// A random linear layer on a8 inputs: the backend's quantized x times W against the F64
// reference's quantized x times W in double.
TEST(ActQuant, A8LinearMatchesF64Reference) {
  const int64_t T = 19, in = 128, out = 48;
  const Tensor x = test::randn({T, in}, 21), W = test::randn({out, in}, 22, 0.1);
  Tensor xq = x.clone();
  ops::fake_quant_rows(xq, 8);
  Tensor y = Tensor::empty({T, out});
  ops::linear(xq, W, y);
  const auto xv = values(x);
  const std::vector<double> xd(xv.begin(), xv.end());
  const auto xr = reference_rows(xd, T, in, 8);
  double err = 0, scale = 0, fp_gap = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double ref = 0, fp = 0;
      for (int64_t i = 0; i < in; ++i) {
        ref += xr[t * in + i] * double(W.at<float>(o * in + i));
        fp += xd[t * in + i] * double(W.at<float>(o * in + i));
      }
      err = std::max(err, std::abs(y.at<float>(t * out + o) - ref));
      fp_gap = std::max(fp_gap, std::abs(fp - ref));
      scale = std::max(scale, std::abs(ref));
    }
  EXPECT_LT(err / scale, 1e-5);
  // The quantization is visible at this tolerance (a no-op quantizer would fail above).
  EXPECT_GT(fp_gap / scale, 1e-3);
}

// ---------------------------------------------------------------- the model
std::unique_ptr<Model> lab_s() { return load_model(test::repo("models/lab-s")); }

std::vector<std::vector<int32_t>> calib_windows(int64_t n = 4, int64_t len = 64) {
  auto tok = load_tokenizer(test::repo("models/lab-s/tokenizer.model"));
  auto stream = tokenize_files(*tok, {test::repo("models/lab-s/README.md")}, true);
  return draw_windows(stream, n, len, 0, "calib");
}

Tensor logits(const Model& m, const std::vector<int32_t>& ids) {
  KVCache c = m.make_cache(int64_t(ids.size()));
  return m.forward(ids, c, true);
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : values(t)) m = std::max(m, double(std::abs(v)));
  return m;
}

double max_diff(const Tensor& a, const Tensor& b) {
  const auto x = values(a), y = values(b);
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, double(std::abs(x[i] - y[i])));
  return m;
}

// A projection that quantizes its own input before the dense product, and checks on every call
// that the backend's quantizer agrees with the F64 reference on that input: a model built from
// these, with no activation setting, must be the a8 model bit for bit (the quantizer sits where
// the projections read), and the quantized activations must be the reference's.
struct ReferenceTally {
  int64_t values = 0, flips = 0;
  double worst = 0;  // largest difference other than a flip, in units of the row's step
};
class ReferenceA8Linear final : public Linear {
 public:
  ReferenceA8Linear(std::unique_ptr<Linear> inner, ReferenceTally* tally)
      : Linear(inner->in_features(), inner->out_features()), inner_(std::move(inner)), tally_(tally) {}
  void forward(const Tensor& x, const Tensor& y) const override {
    const auto xv = values(x);
    const std::vector<double> xd(xv.begin(), xv.end());
    const int64_t n = x.dim(1);
    const auto ref = reference_rows(xd, x.dim(0), n, 8);
    Tensor q = x.clone();
    ops::fake_quant_rows(q, 8);
    for (int64_t r = 0; r < x.dim(0); ++r) {
      const auto b = xd.begin() + r * n;
      const double step = (*std::max_element(b, b + n) - *std::min_element(b, b + n)) / 255.0;
      for (int64_t j = 0; j < n; ++j) {
        const double d = std::abs(q.at<float>(r * n + j) - ref[r * n + j]) / step;
        // A value within an F32 rounding of a grid boundary may take the neighbouring code.
        if (std::abs(d - 1) < 1e-3) ++tally_->flips;
        else tally_->worst = std::max(tally_->worst, d);
      }
    }
    tally_->values += x.numel();
    inner_->forward(q, y);
  }
  Tensor dequantize() const override { return inner_->dequantize(); }
  size_t storage_bytes() const override { return inner_->storage_bytes(); }
  std::string describe() const override { return "reference a8"; }
  Device device() const override { return Device::CPU; }
  std::unique_ptr<Linear> to(Device) const override { return nullptr; }
  nlohmann::json save(const std::string&, NamedTensors&) const override { return nullptr; }

 private:
  std::unique_ptr<Linear> inner_;
  ReferenceTally* tally_;
};

TEST(ActQuant, A8ModelMatchesAReferenceAroundEveryProjection) {
  auto a8 = lab_s(), ref = lab_s(), fp = lab_s();
  ActivationQuant a;
  a.a8 = ActivationQuant::Mode::Token;
  a8->set_activation_quant(a);
  ReferenceTally tally;
  // The same stored (BF16) weights behind the reference, so the products round alike.
  for (const auto& name : ref->linear_names()) {
    auto inner = std::make_unique<DenseLinear>(
        dynamic_cast<const DenseLinear&>(ref->linear(name)).weight());
    ref->set_linear(name, std::make_unique<ReferenceA8Linear>(std::move(inner), &tally));
  }
  const auto ids = calib_windows(1, 96)[0];
  const Tensor la = logits(*a8, ids), lr = logits(*ref, ids), lf = logits(*fp, ids);
  EXPECT_EQ(std::memcmp(la.raw(), lr.raw(), la.nbytes()), 0) << "max diff " << max_diff(la, lr);
  std::printf("%lld activations quantized, %lld on the neighbouring code, other differences up "
              "to %.3g step\n", (long long)tally.values, (long long)tally.flips, tally.worst);
  EXPECT_EQ(tally.values, 96 * (6 * 256 + 640) * 4);  // q, k, v, o, gate, up: 256 wide; down 640
  EXPECT_LT(tally.worst, 1e-4);  // F32 rounding of (code - zero) * step, codes up to 255
  EXPECT_LE(tally.flips, tally.values / 10000);
  EXPECT_GT(max_diff(la, lf) / max_abs(lf), 1e-3) << "a8 changes nothing";
}

TEST(ActQuant, Kv8QuantizesEachHeadOfEachTokenAsItEntersTheCache) {
  auto m = lab_s();
  ActivationQuant a;
  a.kv8 = true;
  m->set_activation_quant(a);
  const auto ids = calib_windows(1, 40)[0];
  KVCache c = m->make_cache(int64_t(ids.size()));
  m->forward(ids, c, false);
  const int64_t hd = m->config().head_dim, nkv = m->config().n_kv_heads;
  // Every head slice of every cached row holds at most 256 distinct values on one grid:
  // requantizing it changes nothing.
  for (const Tensor* t : {&c.K[1], &c.V[1]}) {
    Tensor slice = t->rows(0, int64_t(ids.size())).clone().reshape({int64_t(ids.size()) * nkv, hd});
    Tensor again = slice.clone();
    ops::fake_quant_rows(again, 8);
    EXPECT_LT(max_diff(slice, again), 1e-5 * max_abs(slice));
  }
  // And the cache differs from the full-precision one by up to half a step.
  auto fp = lab_s();
  KVCache f = fp->make_cache(int64_t(ids.size()));
  fp->forward(ids, f, false);
  const double gap = max_diff(f.K[1].rows(0, int64_t(ids.size())), c.K[1].rows(0, int64_t(ids.size())));
  EXPECT_GT(gap, 1e-4 * max_abs(f.K[1]));
  EXPECT_LT(gap, 0.05 * max_abs(f.K[1]));
}

TEST(ActQuant, SmoothingLeavesTheFullPrecisionModelUnchanged) {
  auto m = lab_s(), ref = lab_s();
  const auto windows = calib_windows();
  const SiteMaxima mx = site_maxima(*m, windows);
  const SiteMaxima s = fold_smoothing(*m, mx, 0.5);
  // The scales are far from 1 (else the test could not fail).
  for (const auto& layer : s)
    for (const auto& site : layer) {
      const auto [lo, hi] = std::minmax_element(site.begin(), site.end());
      EXPECT_GT(*hi / *lo, 1.3f);
    }
  const auto ids = calib_windows(1, 128)[0];
  const Tensor a = logits(*m, ids), b = logits(*ref, ids);
  EXPECT_LT(max_diff(a, b) / max_abs(b), 1e-5);
  // GQA: the two query heads that read one value head see one scale per value channel.
  const auto& o = s[0][int(Site::OIn)];
  const int64_t hd = m->config().head_dim;
  for (int64_t i = 0; i < hd; ++i) EXPECT_EQ(o[size_t(i)], o[size_t(hd + i)]);
}

// Per-tensor 8-bit inputs with a planted outlier channel (function-preserving, as lab-mx:
// norm weight x 32, the projections' columns / 32): smoothing must recover most of the loss.
TEST(ActQuant, SmoothingHelpsPerTensorActivationsWithOutliers) {
  auto plant = [](Model& m) {
    for (int64_t l = 0; l < m.n_layers(); ++l) {
      Block& b = m.block(l);
      Tensor w = b.attn_norm.to(DType::F32).clone();
      w.at<float>(7) *= 32;
      b.attn_norm = w;
      for (const char* p : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}) {
        Tensor W = m.linear(Model::linear_name(l, p)).dequantize();
        for (int64_t r = 0; r < W.dim(0); ++r) W.at<float>(r * W.dim(1) + 7) /= 32;
        m.set_linear(Model::linear_name(l, p), std::make_unique<DenseLinear>(W));
      }
    }
  };
  const auto windows = calib_windows();
  const auto ids = calib_windows(1, 128)[0];
  auto fp = lab_s();
  plant(*fp);
  const Tensor lf = logits(*fp, ids);
  auto run = [&](const char* recipe) {
    auto m = lab_s();
    plant(*m);
    QuantizeOptions o;
    o.recipe = parse_recipe(recipe);
    o.progress = false;
    quantize_model(*m, windows, o);
    return max_diff(logits(*m, ids), lf) / max_abs(lf);
  };
  const double plain = run("fp:a8=tensor"), smoothed = run("fp:a8=tensor,smooth=0.5");
  EXPECT_LT(smoothed, 0.5 * plain) << "plain " << plain << " smoothed " << smoothed;
  EXPECT_GT(plain, 1e-3);
}

// ---------------------------------------------------------------- the folder
struct Quantized {
  std::unique_ptr<Model> model;
  std::string dir;
};
Quantized quantize_and_save(const std::string& recipe) {
  Quantized q{lab_s(), test::temp_dir() + "/q"};
  QuantizeOptions o;
  o.recipe = parse_recipe(recipe);
  o.progress = false;
  quantize_model(*q.model, calib_windows(), o);
  save_quantized(*q.model, {q.dir, false, {{"recipe", o.recipe.str()}}});
  return q;
}

TEST(ActQuant, FolderSavesAndReloadsBitIdentically) {
  const auto ids = calib_windows(1, 128)[0];
  for (const char* recipe : {"rtn:w4g128,a8,kv8", "rtn:w8,a8=tensor,smooth=0.5",
                             "gptq:w4g128,a8=tensor,kv8", "rtn:w4g128,smooth=0.8"}) {
    const Quantized q = quantize_and_save(recipe);
    const auto back = load_model(q.dir);
    const ActivationQuant &a = q.model->activation_quant(), &b = back->activation_quant();
    EXPECT_EQ(a.a8, b.a8) << recipe;
    EXPECT_EQ(a.kv8, b.kv8) << recipe;
    EXPECT_EQ(a.smooth, b.smooth) << recipe;
    ASSERT_EQ(a.steps.size(), b.steps.size()) << recipe;
    for (size_t l = 0; l < a.steps.size(); ++l)
      for (int s = 0; s < 4; ++s) EXPECT_EQ(a.steps[l][s], b.steps[l][s]) << recipe;
    const Tensor x = logits(*q.model, ids), y = logits(*back, ids);
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << recipe << ": logits differ";
    EvalOptions eo;
    eo.ctx = 64;
    eo.max_windows = 4;
    eo.progress = false;
    EXPECT_EQ(evaluate(*q.model, ids, eo).ppl, evaluate(*back, ids, eo).ppl) << recipe;
    auto cfg = nlohmann::json::parse(read_text_file(q.dir + "/config.json"));
    EXPECT_TRUE(cfg["quantization_config"].contains("activations")) << recipe;
  }
  // Without activation options nothing is recorded and nothing runs.
  const Quantized plain = quantize_and_save("rtn:w4g128");
  auto cfg = nlohmann::json::parse(read_text_file(plain.dir + "/config.json"));
  EXPECT_FALSE(cfg["quantization_config"].contains("activations"));
  EXPECT_FALSE(load_model(plain.dir)->activation_quant().active());
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error (expected " << parts[0] << ")";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
  }
}

TEST(ActQuant, BadRecipesAreOneLineErrors) {
  expect_error([] { parse_recipe("rtn:w4,smooth=-1"); }, {"--recipe", "smooth=-1", "[0, 1]"});
  expect_error([] { parse_recipe("rtn:w4,smooth=2"); }, {"--recipe", "smooth=2", "[0, 1]"});
  expect_error([] { parse_recipe("rtn:w4,smooth=nan"); }, {"smooth needs a number"});
  expect_error([] { parse_recipe("rtn:w4,smooth"); }, {"smooth needs a value"});
  expect_error([] { parse_recipe("rtn:w4,a8=foo"); }, {"--recipe", "a8='foo' is not valid"});
  expect_error([] { parse_recipe("rtn:w4,a8,a8=tensor"); }, {"a8 given twice"});
  expect_error([] { parse_recipe("gptq:w4+lr:r8,kv8"); }, {"base stage"});
  expect_error([] { parse_layer_recipe("down_proj=rtn:w8,a8"); },
               {"--layer-recipe", "whole model"});
  // Canonical spelling: activation options after the method's own, before any modifier.
  EXPECT_EQ(parse_recipe("rtn:kv8,w4,a8=token").str(), "rtn:w4,a8,kv8");
  EXPECT_EQ(parse_recipe("gptq:a8=tensor,w3g128,smooth=0.5+lr:r8").str(),
            "gptq:w3g128,a8=tensor,smooth=0.5+lr:r8");
  EXPECT_EQ(parse_recipe("fp:a8").str(), "fp:a8");
  EXPECT_EQ(parse_recipe("lrq:w4,a8,kv8").str(false), "lrq:w4");
  for (const char* s : {"rtn:w4,a8,kv8", "rtn:w8,a8=tensor,smooth=0.5", "fp:kv8"})
    EXPECT_EQ(parse_recipe(parse_recipe(s).str()).str(), s);
}

TEST(ActQuant, BadStoredActivationSettingsAreOneLineErrorsNamingTheFile) {
  const Quantized q = quantize_and_save("rtn:w8,a8=tensor");
  const std::string cfg_path = q.dir + "/config.json";
  const std::string good = read_text_file(cfg_path);
  auto edit = [&](const std::function<void(nlohmann::json&)>& f) {
    auto j = nlohmann::json::parse(good);
    f(j["quantization_config"]["activations"]);
    write_file_atomic(cfg_path, j.dump());
  };
  // A huge literal reads as inf, NaN is written as null by JSON writers, and zero or negative
  // steps have no grid.
  {
    auto j = nlohmann::json::parse(good);
    j["quantization_config"]["activations"]["steps"][1][2] = 12345.0;
    std::string text = j.dump();
    text.replace(text.find("12345.0"), 7, "1e999");
    write_file_atomic(cfg_path, text);
    // (nlohmann's reader refuses the overflowing literal itself, naming the file.)
    expect_error([&] { load_model(q.dir); }, {cfg_path, "1e999"});
  }
  for (const nlohmann::json& v : {nlohmann::json(), nlohmann::json(0.0), nlohmann::json(-1.0)}) {
    edit([&](nlohmann::json& a) { a["steps"][0][0] = v; });
    expect_error([&] { load_model(q.dir); }, {cfg_path, "steps[0][attn_in]"});
  }
  edit([](nlohmann::json& a) { a["a8"] = "foo"; });
  expect_error([&] { load_model(q.dir); }, {cfg_path, "a8 must be"});
  edit([](nlohmann::json& a) { a["steps"].erase(1); });
  expect_error([&] { load_model(q.dir); }, {cfg_path, "one entry per layer"});
  edit([](nlohmann::json& a) { a["bits"] = 4; });
  expect_error([&] { load_model(q.dir); }, {cfg_path, "bits must be 8"});
  edit([](nlohmann::json& a) { a["smooth"] = 3; });
  expect_error([&] { load_model(q.dir); }, {cfg_path, "smooth must be"});
  // The CLI: one line on stderr, nonzero exit.
  edit([](nlohmann::json& a) { a["steps"][2][3] = nullptr; });
  const auto r = test::run_cli("eval --model " + q.dir + " --text " +
                               test::repo("models/lab-s/README.md") + " --ctx 64 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("steps[2][down_in]"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  // The same file restored loads again (the errors above came from the edits).
  write_file_atomic(cfg_path, good);
  EXPECT_NO_THROW(load_model(q.dir));
}

TEST(ActQuant, CliRejectsBadRecipesInOneLine) {
  for (const char* recipe : {"rtn:w4,smooth=-1", "rtn:w4,smooth=2", "rtn:w4,a8=foo"}) {
    const auto r = test::run_cli("quantize --model " + test::repo("models/lab-s") + " --calib " +
                                 test::repo("models/lab-s/README.md") + " --recipe '" + recipe +
                                 "' --out " + test::temp_dir() + "/x --quiet");
    EXPECT_NE(r.exit_code, 0) << recipe;
    EXPECT_NE(r.err.find("--recipe"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// The project's rule: the same command writes the same folder, and evaluates to the same
// numbers, with 1 and 2 threads.
TEST(ActQuant, SameBytesAndSameEvalWithOneAndTwoThreads) {
  const std::string base = test::temp_dir();
  const std::string text = test::repo("models/lab-s/README.md");
  for (const char* recipe : {"rtn:w4g128,a8,kv8", "gptq:w8,a8=tensor,smooth=0.5"}) {
    std::string first_bytes, first_eval;
    for (int threads : {1, 2}) {
      const std::string out = base + "/t" + std::to_string(threads);
      const auto r = test::run_cli("--threads " + std::to_string(threads) + " quantize --model " +
                                   test::repo("models/lab-s") + " --calib " + text +
                                   " --nsamples 4 --seqlen 64 --recipe '" + recipe + "' --out " +
                                   out + " --force --quiet --seed 3");
      ASSERT_EQ(r.exit_code, 0) << recipe << ": " << r.err;
      const auto e = test::run_cli("--threads " + std::to_string(threads) + " eval --model " +
                                   out + " --text " + text + " --ctx 64 --json --quiet");
      ASSERT_EQ(e.exit_code, 0) << e.err;
      const auto j = nlohmann::json::parse(e.out);
      const std::string bytes =
          read_text_file(out + "/model.safetensors") + read_text_file(out + "/config.json");
      const std::string ev = j["nll"].dump() + " " + j["ppl"].dump();
      if (threads == 1) {
        first_bytes = bytes;
        first_eval = ev;
      } else {
        EXPECT_TRUE(bytes == first_bytes) << recipe << ": folder differs with 2 threads";
        EXPECT_EQ(ev, first_eval) << recipe;
      }
    }
  }
}

}  // namespace
}  // namespace lrq
