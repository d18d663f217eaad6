// The block-method path of the pipeline, through a method that exists only in this binary:
// "lsqscale" rounds every projection of a block to nearest, then rescales each output row of
// down_proj by least squares against the full-precision block's outputs (the targets). It
// exercises registration from a test file, targets, running the block with candidate layers,
// install, and save -> load.
#include <cmath>
#include <cstdlib>

#include "calib/windows.h"
#include "eval/perplexity.h"
#include "formats/load_model.h"
#include "io/mapped_file.h"
#include "formats/packed_linear.h"
#include "formats/save.h"
#include "quant/method.h"
#include "quant/pipeline.h"
#include "quant/kernels/rtn_grid.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace lrq {
namespace {

// Sum over windows of ||targets - block(inputs)||^2 for the block as the model holds it now.
double block_sq_error(const Model& m, int64_t l, const std::vector<Tensor>& inputs,
                      const std::vector<Tensor>& targets) {
  double e = 0;
  KVCache cache;
  for (size_t w = 0; w < inputs.size(); ++w) {
    Tensor y = inputs[w].clone();
    m.block_forward(l, y, 0, cache);
    const float* py = y.data<float>();
    const float* pt = targets[w].data<float>();
    for (int64_t i = 0; i < y.numel(); ++i) e += double(pt[i] - py[i]) * double(pt[i] - py[i]);
  }
  return e;
}

// A packed weight with row c's group scales (and offsets) multiplied by s[c], rounded to F16.
PackedWeight scale_rows(const PackedWeight& q, const std::vector<double>& s) {
  auto scaled = [&](const Tensor& t16) {
    if (!t16.defined()) return t16;
    Tensor t = t16.to(DType::F32);
    float* p = t.data<float>();
    for (int64_t r = 0; r < q.rows(); ++r)
      for (int64_t g = 0; g < q.ngroups(); ++g) p[r * q.ngroups() + g] *= float(s[size_t(r)]);
    return t.to(DType::F16);
  };
  return PackedWeight::from_tensors(q.codes(), scaled(q.scales()), scaled(q.offsets()),
                                    q.codebook(), q.bits(), q.group(), q.format(), "lsqscale");
}

class LsqScale final : public BlockMethod {
 public:
  explicit LsqScale(const Stage& s) : targets_(!s.flag("notargets")) {
    grid_.bits = int(s.i("bits"));
    grid_.group = s.i("group");
    grid_.symmetric = true;  // one scale per group: the rescale touches scales only
  }
  Needs needs() const override { return {targets_}; }

  std::vector<std::pair<std::string, Quantized>> quantize_block(
      const BlockJob& job) const override {
    Block& b = job.model.block(job.layer);
    std::vector<std::pair<std::string, Quantized>> out;
    for (const auto& p : projection_names())
      out.emplace_back(p, Quantized{std::make_unique<PackedLinear>(
                              rtn_quantize(b.proj(p)->dequantize(), grid_), InputTransform{},
                              std::vector<LowRankPart>{})});
    if (!targets_) return out;

    // Run the block with the quantized layers (the full-precision ones wait in `out`).
    for (auto& [p, q] : out) std::swap(b.proj(p), q.layer);
    const Linear& down = *b.down;
    const int64_t H = job.model.config().hidden;
    std::vector<double> num(size_t(H), 0.0), den(size_t(H), 0.0);
    KVCache cache;
    for (size_t w = 0; w < job.inputs.size(); ++w) {
      Tensor a, y = job.inputs[w].clone();
      job.model.block_forward(job.layer, y, 0, cache, [&](int64_t, Site s, const Tensor& x) {
        if (s == Site::DownIn) a = x.clone();
      });
      // y = h + d with d = down_q(a); the scale s_c minimizing ||t_c - h_c - s_c d_c|| is
      // <t_c - h_c, d_c> / <d_c, d_c>, and t - h = t - y + d.
      Tensor d = Tensor::empty({a.dim(0), H});
      down.forward(a, d);
      const float *pt = job.targets[w].data<float>(), *py = y.data<float>(), *pd = d.data<float>();
      for (int64_t t = 0; t < a.dim(0); ++t)
        for (int64_t c = 0; c < H; ++c) {
          const size_t i = size_t(t * H + c);
          num[size_t(c)] += (double(pt[i]) - py[i] + pd[i]) * pd[i];
          den[size_t(c)] += double(pd[i]) * pd[i];
        }
    }
    const double before = block_sq_error(job.model, job.layer, job.inputs, job.targets);
    std::vector<double> s(size_t(H), 1.0);
    for (size_t c = 0; c < s.size(); ++c)
      if (den[c] > 0) s[c] = num[c] / den[c];
    const auto& packed = dynamic_cast<const PackedLinear&>(down);
    b.down = std::make_unique<PackedLinear>(scale_rows(packed.packed(), s), InputTransform{},
                                            std::vector<LowRankPart>{});
    const double after = block_sq_error(job.model, job.layer, job.inputs, job.targets);
    for (auto& [p, q] : out) std::swap(b.proj(p), q.layer);
    out.back().second.extra = {{"lsq_err_before", before}, {"lsq_err_after", after}};
    return out;
  }

 private:
  RtnOptions grid_;
  bool targets_;
};

LRQ_REGISTER_METHOD(
    lsqscale,
    MethodEntry{MethodSpec{"lsqscale",
                           "test only: RTN of a block, then least-squares row scales of "
                           "down_proj against the full-precision block's outputs",
                           {{"bits", OptionSpec::Int, "4", "bits per weight", {"2", "3", "4", "8"}},
                            {"group", OptionSpec::Int, "128", "input columns per scale"},
                            {"notargets", OptionSpec::Flag, "", "RTN only: no targets asked"}}},
                1000, nullptr,
                [](const Stage& s) -> std::unique_ptr<BlockMethod> {
                  return std::make_unique<LsqScale>(s);
                }});

struct Data {
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> calib_ids, eval_ids;
};
const Data& data() {
  static Data d = [] {
    Data d;
    d.tok = load_tokenizer(test::repo("models/lab-s/tokenizer.model"));
    d.calib_ids = tokenize_files(*d.tok, {test::shared("data/lab-corpus/calib.txt")}, true);
    d.eval_ids = d.tok->encode(read_text_file(test::shared("data/lab-corpus/valid.txt")), true);
    return d;
  }();
  return d;
}

std::unique_ptr<Model> quantized(const std::string& recipe, int64_t n, int64_t seqlen,
                                 QuantizeReport* rep) {
  auto m = load_model(test::repo("models/lab-s"));
  QuantizeOptions o;
  o.recipe = parse_recipe(recipe);
  o.progress = false;
  *rep = quantize_model(*m, draw_windows(data().calib_ids, n, seqlen, 0, "calib"), o);
  return m;
}

double ppl(const Model& m) {
  EvalOptions o;
  o.max_windows = 8;
  o.progress = false;
  return evaluate(m, data().eval_ids, o).ppl;
}

TEST(BlockMethod, RescaleLowersEveryBlocksOutputErrorAndCheckpointReloads) {
  REQUIRE_SHARED();
  QuantizeReport rep;
  auto m = quantized("lsqscale:w3g128", 8, 128, &rep);
  const int64_t L = m->n_layers();
  ASSERT_EQ(rep.layers.size(), size_t(7 * L));
  int lowered = 0;
  for (int64_t l = 0; l < L; ++l) {
    const std::string down = Model::linear_name(l, "mlp.down_proj");
    const LayerReport* lr = nullptr;
    for (const auto& r : rep.layers)
      if (r.name == down) lr = &r;
    ASSERT_NE(lr, nullptr) << down;
    const double before = lr->extra.at("lsq_err_before"), after = lr->extra.at("lsq_err_after");
    EXPECT_LE(after, before) << down;
    lowered += after < before;
    EXPECT_EQ(lr->recipe, "lsqscale:w3g128");
    EXPECT_GT(lr->output_err, 0.0);
  }
  EXPECT_GE(lowered, 1);

  // The checkpoint loads back to the same function.
  const std::string dir = test::temp_dir() + "/q";
  save_quantized(*m, {dir, false, {}});
  auto back = load_model(dir);
  EXPECT_EQ(ppl(*back), ppl(*m));
}

TEST(BlockMethod, RegisteredOnlyInThisBinary) {
  const Recipe r = parse_recipe("lsqscale:w3g64,notargets");
  EXPECT_EQ(r.str(), "lsqscale:w3g64,notargets");
  EXPECT_TRUE(is_block_method(r));
  EXPECT_FALSE(is_block_method(parse_recipe("gptq:w4g128")));
  EXPECT_THROW(make_method(r), Error);
  EXPECT_THROW(parse_recipe("lsqscale:w5"), Error);
  bool listed = false;
  for (const auto& s : method_specs()) listed |= s.name == "lsqscale";
  EXPECT_TRUE(listed);
  const auto cli = test::run_cli("recipes");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_NE(cli.out.find("gptq"), std::string::npos);
  EXPECT_EQ(cli.out.find("lsqscale"), std::string::npos);
}

TEST(BlockMethod, OverridesInsideABlockMethodBlockMustAgree) {
  REQUIRE_SHARED();
  auto m = load_model(test::repo("models/lab-s"));
  QuantizeOptions o;
  o.recipe = parse_recipe("lsqscale:w4g128,notargets");
  o.overrides = {parse_layer_recipe("layers\\.0\\.mlp\\.up_proj=rtn:w4g128")};
  o.progress = false;
  EXPECT_THROW(quantize_model(*m, draw_windows(data().calib_ids, 2, 64, 0, "calib"), o), Error);
}

// Peak-memory probe for docs/DECISIONS.md (run by hand under /usr/bin/time -v):
//   LRQ_LSQ_RECIPE=lsqscale:w4g128[,notargets] LRQ_LSQ_N=128 LRQ_LSQ_T=1024 \
//     block_method_test --gtest_also_run_disabled_tests --gtest_filter='*PeakMemory*'
TEST(BlockMethod, DISABLED_PeakMemory) {
  REQUIRE_SHARED();
  auto env = [](const char* k, const char* def) {
    const char* v = std::getenv(k);
    return std::string(v ? v : def);
  };
  QuantizeReport rep;
  quantized(env("LRQ_LSQ_RECIPE", "lsqscale:w4g128"), std::stoll(env("LRQ_LSQ_N", "128")),
            std::stoll(env("LRQ_LSQ_T", "1024")), &rep);
  EXPECT_EQ(rep.layers.size(), size_t(7 * 4));
}

}  // namespace
}  // namespace lrq
