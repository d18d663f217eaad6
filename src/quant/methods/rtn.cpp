// RTN: round to nearest on per-group grids, optional diag(H)-weighted clip search.
#include "quant/methods/common.h"
#include "quant/methods/options.h"

namespace lrq {

namespace {

class Rtn final : public Method {
 public:
  explicit Rtn(const GridChoice& o) : o_(o) {}
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob&) const override {
    return {quantize_on_grid(W, o_, nullptr, Tensor(), nullptr,
                             o_.weigh_by_h ? diag_h(st) : Tensor())};
  }
  // K-quant grids are fitted on the host.
  bool runs_on(Device d) const override { return d == Device::CPU || (gpu_build() && !o_.kquant); }

 private:
  GridChoice o_;
};

std::unique_ptr<Method> make(const Stage& s) {
  return std::make_unique<Rtn>(parse_grid_choice(s));
}

}  // namespace

LRQ_REGISTER_METHOD(
    rtn, {.spec = {"rtn", "round to nearest on a uniform grid", grid_option_specs()},
          .order = 20,
          .layer = make});

}  // namespace lrq
