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
  GridChoice grid;                      // the residual's
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
    // The residual's layer (no branch yet) on W's device, and its decoded matrix there.
    const Tensor imp = o_.grid.weigh_by_h ? diag_h(st) : Tensor();
    auto quantize_residual = [&](const Tensor& Rw) {
      return quantize_on_grid(Rw, o_.grid, gptq ? &o_.gptq : nullptr, H, factor.get(), imp);
    };
    auto dequant = [&](const LowRankLinear& q) {
      return q.device() == dev ? q.dequantize() : q.to(dev)->dequantize();
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
      out.layer = quantize_residual(W);
      return out;
    }
    LowRankPart part = lowrank_part(lr);
    Tensor Wr = product(part);
    std::unique_ptr<LowRankLinear> res = quantize_residual(difference(W, Wr));
    Tensor Wq = dequant(*res);
    double best = hessian_error(difference(difference(W, Wr), Wq), H);
    std::vector<double> curve = {best};
    std::unique_ptr<LowRankLinear> best_res = std::move(res);
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
      res = quantize_residual(difference(W, Wr));
      Wq = dequant(*res);
      double err = hessian_error(difference(difference(W, Wr), Wq), H);
      curve.push_back(err);
      if (err < best) {
        best = err;
        best_res = std::move(res);
        best_part = part;
        best_epoch = e;
      }
    }
    out.extra["blc_curve"] = curve;
    out.extra["blc_best_epoch"] = best_epoch;
    out.layer = best_res->with_low_rank({std::move(best_part)});
    return out;
  }
  // K-quant grids are fitted on the host.
  bool runs_on(Device d) const override {
    return d == Device::CPU || (gpu_build() && !o_.grid.kquant);
  }

 private:
  FlrqOptions o_;
};

std::unique_ptr<Method> make(const Stage& s) {
  FlrqOptions o;
  RtnOptions grid;
  grid.bits = int(s.i("bits"));
  grid.group = s.i("group");
  grid.symmetric = !s.flag("asym");
  grid.clip_search = s.s("clip") == "on";
  o.grid = with_grid_type(s, grid);
  using R = FlrqOptions::Residual;
  o.residual = choice<R>(s, "residual", {R::Rtn, R::Gptq});
  o.gptq.grid = o.grid.grid;
  o.gptq.act_order = s.flag("act_order");
  o.gptq.damp = s.f("damp");
  o.flex = parse_flex_options(s);
  // R1-FLR's storage rule counts the residual's code bits (those of the type when one is named).
  o.flex.bits = o.grid.kquant ? gguf::kquant_layout(*o.grid.kquant)->code_bits : o.grid.grid.bits;
  o.epochs = s.i("epochs") ? int(s.i("epochs")) : (o.flex.bits >= 3 ? 1 : 20);
  if (s.s("blc") == "off") o.epochs = 0;
  return std::make_unique<Flrq>(o);
}

}  // namespace

LRQ_REGISTER_METHOD(
    flrq,
    {.spec = {"flrq", "FLRQ: W ~ L R + Q(Clip(W - L R)), rank per layer by R1-FLR, BLC refinement",
              cat({pick(grid_option_specs(),
                        {{"bits", "residual code width (wB shorthand)", "3"},
                         {"group", "residual group size", "128"},
                         {"type", "the residual on a ggml type's grid (q4_k, ..., q4_0)"}}),
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
