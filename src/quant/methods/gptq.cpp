// GPTQ: Hessian-compensated column-wise quantization (solver in quant/kernels/gptq_solver.cpp).
#include "quant/methods/common.h"
#include "quant/methods/options.h"

namespace lrq {

namespace {

class Gptq final : public Method {
 public:
  Gptq(const GptqOptions& o, const GridChoice& g) : o_(o), grid_(g) {}
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob& job) const override {
    // q/k/v (and gate/up) share one H, so its factor is made once per site and options.
    const auto f = st.memo<GptqFactor>(gptq_factor_key(o_, st.H().device()), [&] {
      return std::make_shared<const GptqFactor>(gptq_factor(st.H(), o_));
    });
    GptqResult r;
    Quantized q;
    q.layer = quantize_on_grid(W, grid_, &o_, st.H(), f.get(), Tensor(), {}, &r);
    if (!r.warning.empty()) q.extra["warning"] = r.warning;
    q.extra["gptq_loss"] = r.loss;
    return q;
  }
  // K-quant grids are fitted on the host.
  bool runs_on(Device d) const override {
    return d == Device::CPU || (gpu_build() && !grid_.kquant);
  }

 private:
  GptqOptions o_;
  GridChoice grid_;
};

std::unique_ptr<Method> make(const Stage& s) {
  return std::make_unique<Gptq>(parse_gptq_options(s), parse_grid_choice(s));
}

}  // namespace

LRQ_REGISTER_METHOD(
    gptq, {.spec = {"gptq", "GPTQ: column-wise quantization with Hessian error compensation",
                    cat({grid_option_specs(), gptq_option_specs()})},
           .order = 30,
           .layer = make});

}  // namespace lrq
