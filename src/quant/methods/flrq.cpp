// FLRQ (arXiv 2601.05684): W ~ L R + Q(Clip(W - L R)).
//   1. Activation scaling: the low-rank part is extracted from W diag(a), a = mean|x|^act
//      (normalized to geometric mean 1), and unscaled on the input side.
//   2. R1-FLR picks the rank while the sketch runs: after rank r, with d the residual bits,
//      p = amax(W)/amax(residual), q = (d + log2 p)/d (precision gain) and
//      k = 1 + 16 r (m + n)/(d m n) (storage growth), rank r is rejected and extraction stops
//      when k > q, k > 1 + x, or the amax curve has flattened (mean relative drop over the last
//      4 ranks < flat).
//   3. The residual is quantized by symmetric group RTN with a clip search (or GPTQ with
//      residual=gptq, our option).
//   4. BLC alternates L R = best rank-r fit of W - Wq and Wq = Q(W - L R), keeping the pair
//      with the least output error tr(D H D^T), D = W - L R - Wq.
// On the GPU every m x n step (sketch, products, residuals, errors, the quantizers and their
// packing) runs there; only the factors (r (m + n) values) are rounded on the host, and the
// layer is built on the GPU.
#include <cmath>

#include "backend/ops.h"
#include "quant/methods/common.h"
#include "quant/methods/options.h"
#include "quant/objective.h"

namespace lrq {

namespace {

struct FlrqOptions {
  RtnOptions grid;                      // the residual's
  enum class Residual { Rtn, Gptq } residual = Residual::Rtn;
  GptqOptions gptq;                     // residual=gptq: grid, act_order, damp
  FlexRankOptions flex;
  int epochs = 1;                       // BLC epochs after the first fit (0: no BLC)
};

class Flrq final : public Method {
 public:
  explicit Flrq(const FlrqOptions& o) : o_(o) {}

  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob& job) const override {
    const int64_t m = W.dim(0), n = W.dim(1);
    const Device dev = W.device();
    const auto site = site_tensors(st, dev);
    const Tensor& H = site->H;
    // 1-2. Activation-scaled sketch with R1-FLR's rank rule.
    Quantized out;
    LowRank lr = flexible_low_rank(W, st, o_.flex, job.seed);
    out.extra["amax_curve"] = lr.amax_curve;
    const int r = lr.rank();
    out.extra["rank"] = r;

    // 3-4. Residual quantization and BLC.
    const bool gptq = o_.residual == FlrqOptions::Residual::Gptq;
    // BLC quantizes against one H many times: GPTQ's factor of it is made once per site.
    std::shared_ptr<const GptqFactor> factor;
    if (gptq)
      factor = st.memo<GptqFactor>(gptq_factor_key(o_.gptq, dev), [&] {
        return std::make_shared<const GptqFactor>(gptq_factor(H, o_.gptq));
      });
    auto quantize_residual = [&](const Tensor& Rw, GptqResult& res) {
      if (gptq) {
        res = gptq_quantize(Rw, H, o_.gptq, factor.get());
      } else {
        res.q = rtn_quantize(Rw, o_.grid, o_.grid.clip_search ? diag_h(st) : Tensor());
        res.perm.clear();
      }
    };
    auto dequant = [&](const GptqResult& res) {
      // Decoded where the quantizer left it: W's device.
      Tensor Wq = res.q.to(dev).dequantize();
      if (!res.perm.empty()) InputTransform().permute(res.perm).unapply_rows(Wq);
      return Wq;
    };
    // Factors are rounded to the stored fp16 before use, so every error is the stored one.
    auto lowrank_part = [](const LowRank& f) {
      return LowRankPart::from_f32(f.L.to(Device::CPU), f.R.to(Device::CPU), false);
    };
    auto product = [&](const LowRankPart& p) {
      Tensor P = Tensor::zeros({m, n}, DType::F32, dev);
      add_low_rank({p}, P);
      return P;
    };

    if (r == 0) {
      GptqResult res;
      quantize_residual(W, res);
      out.layer = from_gptq(std::move(res));
      return out;
    }
    LowRankPart part = lowrank_part(lr);
    Tensor Wr = product(part);
    GptqResult res;
    quantize_residual(difference(W, Wr), res);
    Tensor Wq = dequant(res);
    double best = hessian_error(difference(difference(W, Wr), Wq), H);
    std::vector<double> curve = {best};
    GptqResult best_res = res;
    LowRankPart best_part = part;
    int best_epoch = 0;
    for (int e = 1; e <= o_.epochs; ++e) {
      LowRankControl c;
      c.col_scale = activation_scale(st.mean_abs(), o_.flex.act);
      LowRankSpec spec = o_.flex.spec;
      spec.seed = job.seed + uint64_t(e);
      LowRank f = low_rank(difference(W, Wq), r, spec, c);
      part = lowrank_part(f);
      Wr = product(part);
      quantize_residual(difference(W, Wr), res);
      Wq = dequant(res);
      double err = hessian_error(difference(difference(W, Wr), Wq), H);
      curve.push_back(err);
      if (err < best) {
        best = err;
        best_res = res;
        best_part = part;
        best_epoch = e;
      }
    }
    out.extra["blc_curve"] = curve;
    out.extra["blc_best_epoch"] = best_epoch;
    InputTransform t;
    if (!best_res.perm.empty()) t.permute(std::move(best_res.perm));
    out.layer = std::make_unique<PackedLinear>(std::move(best_res.q), std::move(t),
                                              std::vector<LowRankPart>{std::move(best_part)});
    return out;
  }
  bool runs_on(Device d) const override { return d == Device::CPU || gpu_build(); }

 private:
  FlrqOptions o_;
};

std::unique_ptr<Method> make(const Stage& s) {
  FlrqOptions o;
  o.grid.bits = int(s.i("bits"));
  o.grid.group = s.i("group");
  o.grid.symmetric = !s.flag("asym");
  o.grid.clip_search = s.s("clip") == "on";
  using R = FlrqOptions::Residual;
  o.residual = choice<R>(s, "residual", {R::Rtn, R::Gptq});
  o.gptq.grid = o.grid;
  o.gptq.act_order = s.flag("act_order");
  o.gptq.damp = s.f("damp");
  o.flex = parse_flex_options(s);
  o.epochs = s.i("epochs") ? int(s.i("epochs")) : (o.grid.bits >= 3 ? 1 : 20);
  if (s.s("blc") == "off") o.epochs = 0;
  return std::make_unique<Flrq>(o);
}

}  // namespace

LRQ_REGISTER_METHOD(
    flrq,
    {.spec = {"flrq", "FLRQ: W ~ L R + Q(Clip(W - L R)), rank per layer by R1-FLR, BLC refinement",
              cat({pick(grid_option_specs(),
                        {{"bits", "residual code width (wB shorthand)", "3"},
                         {"group", "residual group size", "128"}}),
                   {{"asym", OptionSpec::Flag, "", "asymmetric residual grid (FLRQ: symmetric)"},
                    {"clip", OptionSpec::Choice, "on", "clip search on the residual grid",
                     {"on", "off"}},
                    {"residual", OptionSpec::Choice, "rtn", "residual quantizer", {"rtn", "gptq"}}},
                   flex_option_specs(),
                   {{"blc", OptionSpec::Choice, "on", "BLC alternation", {"on", "off"}},
                    {"epochs", OptionSpec::Int, "0",
                     "BLC epochs (0: 1 at >= 3 bits, 20 at 2 bits)"}},
                   pick(gptq_option_specs(), {{"act_order", "GPTQ residual: act-order"},
                                              {"damp", "GPTQ residual: damping"}})})},
     .order = 60,
     .layer = make});

}  // namespace lrq
