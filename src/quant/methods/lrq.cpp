// LRQ (arXiv 2407.11534): per block, the seven projections' scale parameters
// (quant/kernels/lrq_scales.h) trained together by Adam so that the fake-quantized block
// reproduces the full-precision block's outputs on the quantized model's inputs; the result is
// an ordinary affine packed weight per projection. The block's gradients come from BlockGrad
// (model/block_grad.h). CPU for now.
#include <chrono>
#include <cmath>
#include <numbers>
#include <random>

#include "backend/ops.h"
#include "model/block_grad.h"
#include "model/llama.h"
#include "quant/kernels/lrq_scales.h"
#include "quant/methods/common.h"
#include "quant/methods/options.h"

namespace lrq {

namespace {

struct LrqTrain {
  LrqOptions grid;
  int steps = 200;
  int64_t batch = 2;
  double lr = 1e-3;
};

// Mean over windows of the block's squared error per token and hidden unit.
double block_loss(BlockGrad& bg, const std::vector<Tensor>& in, const std::vector<Tensor>& tgt) {
  double e = 0, count = 0;
  for (size_t w = 0; w < in.size(); ++w) {
    const Tensor y = bg.forward(in[w]);
    const float *py = y.data<float>(), *pt = tgt[w].data<float>();
    for (int64_t i = 0; i < y.numel(); ++i) e += double(py[i] - pt[i]) * double(py[i] - pt[i]);
    count += double(y.numel());
  }
  return count > 0 ? e / count : 0.0;
}

class Lrq final : public BlockMethod {
 public:
  explicit Lrq(const LrqTrain& o) : o_(o) {}

  std::vector<std::pair<std::string, Quantized>> quantize_block(
      const BlockJob& job) const override {
    const auto t0 = std::chrono::steady_clock::now();
    const Model& model = job.model;
    const Block& b = job.model.block(job.layer);
    if (job.inputs.empty() || job.targets.size() != job.inputs.size())
      fail("lrq", "block {}: needs calibration inputs and their full-precision targets",
           job.layer);
    BlockWeights w = BlockWeights::from_block(b, DType::F32, Device::CPU);
    const auto names = projection_names();
    std::vector<LrqScales> sc;
    std::vector<std::vector<Tensor>> m1, m2;  // Adam's moments, per projection per parameter
    for (size_t p = 0; p < names.size(); ++p) {
      Tensor& W = *w.named()[2 + p].second;
      const std::string full = Model::linear_name(job.layer, names[p]);
      sc.push_back(LrqScales::init(W, o_.grid, layer_seed(job.seed, full)));
      W = sc.back().forward();
      std::vector<Tensor> a, v;
      for (Tensor* t : sc.back().params.list()) {
        a.push_back(Tensor::zeros(t->shape()));
        v.push_back(Tensor::zeros(t->shape()));
      }
      m1.push_back(std::move(a));
      m2.push_back(std::move(v));
    }
    BlockGrad bg(model.config(), w);
    const std::vector<Tensor> in = host(job.inputs), tgt = host(job.targets);
    const double before = block_loss(bg, in, tgt);

    // Windows drawn per step from one generator seeded by the block: the same batches on
    // every run and thread count.
    std::mt19937_64 gen(layer_seed(job.seed, "lrq block " + std::to_string(job.layer)));
    std::uniform_int_distribution<size_t> pick(0, in.size() - 1);
    const int64_t hidden = model.config().hidden;
    for (int step = 0; step < o_.steps; ++step) {
      BlockWeights g = bg.weights().zeros_like();
      g.attn_norm = Tensor();  // the norms stay as they are
      g.mlp_norm = Tensor();
      const int64_t B = std::min<int64_t>(o_.batch, int64_t(in.size()));
      for (int64_t k = 0; k < B; ++k) {
        const size_t idx = pick(gen);
        Tensor dy = bg.forward(in[idx]);
        // Loss: squared error summed over tokens, averaged over the batch and hidden units.
        const float scale = 2.f / float(B * hidden);
        float* d = dy.data<float>();
        const float* t = tgt[idx].data<float>();
        for (int64_t i = 0; i < dy.numel(); ++i) d[i] = scale * (d[i] - t[i]);
        bg.backward(dy, g);
      }
      ops::AdamParams ap;
      ap.lr = o_.lr * 0.5 * (1.0 + std::cos(std::numbers::pi * double(step) / double(o_.steps)));
      ap.step = step + 1;
      for (size_t p = 0; p < sc.size(); ++p) {
        LrqParams grads = sc[p].params.zeros_like();
        sc[p].backward(*g.named()[2 + p].second, grads);
        const auto params = sc[p].params.list();
        const auto gl = grads.list();
        for (size_t t = 0; t < params.size(); ++t)
          ops::adam_step(*params[t], *gl[t], m1[p][t], m2[p][t], ap);
        *bg.weights().named()[2 + p].second = sc[p].forward();
      }
    }
    const double after = o_.steps > 0 ? block_loss(bg, in, tgt) : before;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::vector<std::pair<std::string, Quantized>> out;
    for (size_t p = 0; p < names.size(); ++p) {
      Quantized q{std::make_unique<PackedLinear>(sc[p].pack(), InputTransform{},
                                                std::vector<LowRankPart>{})};
      q.extra["rank"] = sc[p].rank();
      out.emplace_back(names[p], std::move(q));
    }
    out.front().second.extra["lrq_loss_before"] = before;
    out.front().second.extra["lrq_loss_after"] = after;
    out.front().second.extra["lrq_steps"] = o_.steps;
    out.front().second.extra["lrq_seconds"] = secs;
    return out;
  }

 private:
  static std::vector<Tensor> host(const std::vector<Tensor>& v) {
    std::vector<Tensor> out;
    for (const Tensor& t : v) out.push_back(t.to(Device::CPU).to(DType::F32));
    return out;
  }
  LrqTrain o_;
};

std::unique_ptr<BlockMethod> make(const Stage& s) {
  LrqTrain o;
  o.grid.bits = int(s.i("bits"));
  o.grid.group = s.i("group");
  o.grid.clip = s.flag("clip");
  o.grid.rank = s.i("rank");
  o.grid.full = s.flag("full");
  o.steps = int(s.i("steps"));
  o.batch = s.i("batch");
  o.lr = s.f("lr");
  if (o.grid.rank < 0) fail("recipe", "lrq: rank must be >= 0 (0: min(m, n) / 4)");
  if (o.grid.full && o.grid.rank > 0) fail("recipe", "lrq: full and rank exclude each other");
  if (o.steps < 0) fail("recipe", "lrq: steps must be >= 0");
  if (o.batch < 1) fail("recipe", "lrq: batch must be >= 1");
  if (!(o.lr > 0) || !std::isfinite(o.lr)) fail("recipe", "lrq: lr must be positive");
  return std::make_unique<Lrq>(o);
}

}  // namespace

LRQ_REGISTER_METHOD(
    lrq,
    {.spec = {"lrq",
              "LRQ: scales learned by block reconstruction, S = exp(d1 + L U + r + c); stored as "
              "a plain affine grid",
              {{"bits", OptionSpec::Int, "4", "code width (wB shorthand)", {"2", "3", "4", "8"}},
               {"group", OptionSpec::Int, "0",
                "input columns per scale, 0 = one group per row (wBgG)"},
               {"clip", OptionSpec::Flag, "",
                "init: search 100 range fractions by the L_p error (p = 2.4); else min/max"},
               {"rank", OptionSpec::Int, "0", "rank of L U (0: min(m, n) / 4)"},
               {"full", OptionSpec::Flag, "", "element-wise log divisor (FlexRound's ablation)"},
               {"steps", OptionSpec::Int, "200", "Adam steps per block (paper: 5000)"},
               {"batch", OptionSpec::Int, "2", "calibration windows per step"},
               {"lr", OptionSpec::Float, "0.001",
                "Adam learning rate, cosine decay to 0 (paper: 4e-4 to 9e-4 at 5000 steps)"}}},
     .order = 57,
     .block = make});

}  // namespace lrq
