// RTN: round to nearest on per-group grids, optional diag(H)-weighted clip search.
#include "quant/methods/common.h"
#include "quant/methods/options.h"

namespace lrq {

namespace {

class Rtn final : public Method {
 public:
  explicit Rtn(const RtnOptions& o) : o_(o) {}
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob&) const override {
    PackedWeight q = rtn_quantize(W, o_, o_.clip_search ? diag_h(st) : Tensor());
    return {std::make_unique<PackedLinear>(std::move(q), InputTransform{},
                                          std::vector<LowRankPart>{})};
  }
  bool runs_on(Device d) const override { return d == Device::CPU || gpu_build(); }

 private:
  RtnOptions o_;
};

std::unique_ptr<Method> make(const Stage& s) {
  return std::make_unique<Rtn>(parse_grid_options(s));
}

}  // namespace

LRQ_REGISTER_METHOD(
    rtn, {.spec = {"rtn", "round to nearest on a uniform grid", grid_option_specs()},
          .order = 20,
          .layer = make});

}  // namespace lrq
