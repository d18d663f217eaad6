// RTN: round to nearest on per-group grids, optional diag(H)-weighted clip search.
#include "quant/methods/common.h"

namespace lrq {

namespace {
class Rtn final : public Method {
 public:
  explicit Rtn(const Stage& s) : o_(grid_options(s)) {}
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob&) const override {
    PackedWeight q = rtn_quantize(W, o_, o_.clip_search ? diag_h(st) : Tensor());
    return {std::make_unique<PackedLinear>(std::move(q), InputTransform{},
                                          std::vector<LowRankPart>{})};
  }
  bool runs_on(Device d) const override { return d == Device::CPU || gpu_build(); }

 private:
  RtnOptions o_;
};
}  // namespace

std::unique_ptr<Method> make_rtn(const Stage& s) { return std::make_unique<Rtn>(s); }

}  // namespace lrq
