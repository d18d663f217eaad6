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
#include "quant/flexible_rank.h"
#include "quant/methods/common.h"
#include "quant/objective.h"

namespace lrq {

namespace {

class Flrq final : public Method {
 public:
  explicit Flrq(const Stage& s) : st_(s) {
    grid_.bits = int(s.i("bits"));
    grid_.group = s.i("group");
    grid_.symmetric = !s.flag("asym");
    grid_.clip_search = s.s("clip") == "on";
    gptq_.grid = grid_;
    gptq_.act_order = s.flag("act_order");
    gptq_.damp = s.f("damp");
    flex_ = flex_options(s);
    epochs_ = s.i("epochs") ? int(s.i("epochs")) : (grid_.bits >= 3 ? 1 : 20);
    if (s.s("blc") == "off") epochs_ = 0;
  }

  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob& job) const override {
    const int64_t m = W.dim(0), n = W.dim(1);
    const Device dev = W.device();
    const auto site = site_tensors(st, dev);
    const Tensor& H = site->H;
    // 1-2. Activation-scaled sketch with R1-FLR's rank rule.
    Quantized out;
    LowRank lr = flexible_low_rank(W, st, flex_, job.seed);
    out.extra["amax_curve"] = lr.amax_curve;
    const int r = lr.rank();
    out.extra["rank"] = r;

    // 3-4. Residual quantization and BLC.
    const bool gptq = st_.s("residual") == "gptq";
    // BLC quantizes against one H many times: GPTQ's factor of it is made once per site.
    std::shared_ptr<const GptqFactor> factor;
    if (gptq)
      factor = st.memo<GptqFactor>(gptq_factor_key(gptq_, dev), [&] {
        return std::make_shared<const GptqFactor>(gptq_factor(H, gptq_));
      });
    auto quantize_residual = [&](const Tensor& Rw, GptqResult& res) {
      if (gptq) {
        res = gptq_quantize(Rw, H, gptq_, factor.get());
      } else {
        res.q = rtn_quantize(Rw, grid_, grid_.clip_search ? diag_h(st) : Tensor());
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
    for (int e = 1; e <= epochs_; ++e) {
      LowRankControl c;
      c.col_scale = activation_scale(st.mean_abs(), flex_.act);
      LowRankSpec spec = flex_.spec;
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
  Stage st_;
  RtnOptions grid_;
  GptqOptions gptq_;
  FlexRankOptions flex_;
  int epochs_;
};
}  // namespace

std::unique_ptr<Method> make_flrq(const Stage& s) { return std::make_unique<Flrq>(s); }

}  // namespace lrq
