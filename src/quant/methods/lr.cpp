// lr: a modifier stage after a base method. It fits a low-rank L R to the base layer's error
// E = W - Wq under a weighting of the input channels (quant/kernels/error_correction.h) and
// adds it to the layer's low-rank parts.
#include "quant/kernels/error_correction.h"
#include "quant/methods/common.h"
#include "quant/methods/options.h"
#include "quant/objective.h"

namespace lrq {

namespace {

struct LrOptions {
  int64_t rank = 16;
  ErrorWeighting scale = ErrorWeighting::None;
};

class ErrorCorrection final : public Method {
 public:
  ErrorCorrection(std::unique_ptr<Method> base, LrOptions o) : base_(std::move(base)), o_(o) {}
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob& job) const override {
    Quantized q = base_->quantize(W, st, job);
    auto* ql = dynamic_cast<LowRankLinear*>(q.layer.get());
    if (!ql) fail(job.layer, "'lr' needs a quantized base layer");
    // The error on W's device (a layer from a CPU-only base is copied there to decode).
    const Tensor Wq =
        ql->device() == W.device() ? ql->dequantize() : ql->to(W.device())->dequantize();
    const Tensor E = difference(W, Wq);
    const auto site = site_tensors(st, W.device());
    Factors f = fit_error_low_rank(E, o_.rank, o_.scale, site->H, site->mean_abs);
    std::vector<LowRankPart> parts = ql->low_rank();
    parts.push_back(LowRankPart::from_f32(f.L.to(Device::CPU), f.R.to(Device::CPU), false));
    q.layer = ql->with_low_rank(std::move(parts));
    q.extra["lr_rank"] = f.R.dim(0);
    return q;
  }
  // The fit is device-generic (fit_error_low_rank runs on E's device).
  bool runs_on(Device d) const override {
    return base_->runs_on(d) && (d == Device::CPU || gpu_build());
  }

 private:
  std::unique_ptr<Method> base_;
  LrOptions o_;
};

}  // namespace

std::unique_ptr<Method> with_error_correction(std::unique_ptr<Method> base, const Stage& s) {
  using W = ErrorWeighting;
  LrOptions o;
  o.rank = s.i("rank");
  o.scale = choice<W>(s, "scale", {W::None, W::Diag, W::Full});
  return std::make_unique<ErrorCorrection>(std::move(base), o);
}

LRQ_REGISTER_METHOD(
    lr, {.spec = {"lr",
                  "low-rank correction L R fitted to the quantization error of the base method",
                  {{"rank", OptionSpec::Int, "16", "rank (rN shorthand)"},
                   {"scale", OptionSpec::Choice, "none",
                    "error weighting: none (LoRC), diag (LQER: mean |x|), full (QERA: H^1/2)",
                    {"none", "diag", "full"}}},
                  true},
         .order = 80});

}  // namespace lrq
