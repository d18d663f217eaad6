// GPTQ: Hessian-compensated column-wise quantization (kernel in quant/gptq.cpp).
#include "quant/methods/common.h"

namespace lrq {

namespace {
class Gptq final : public Method {
 public:
  explicit Gptq(const Stage& s) : o_(gptq_options(s)) {}
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob& job) const override {
    // q/k/v (and gate/up) share one H, so its factor is made once per site and options.
    const auto f = st.memo<GptqFactor>(gptq_factor_key(o_, st.H().device()), [&] {
      return std::make_shared<const GptqFactor>(gptq_factor(st.H(), o_));
    });
    GptqResult r = gptq_quantize(W, st.H(), o_, f.get());
    Quantized q;
    if (!r.warning.empty()) q.extra["warning"] = r.warning;
    q.extra["gptq_loss"] = r.loss;
    q.layer = from_gptq(std::move(r));
    return q;
  }
  bool runs_on(Device d) const override { return d == Device::CPU || gpu_build(); }

 private:
  GptqOptions o_;
};
}  // namespace

std::unique_ptr<Method> make_gptq(const Stage& s) { return std::make_unique<Gptq>(s); }

}  // namespace lrq
