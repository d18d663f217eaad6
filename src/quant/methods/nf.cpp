// NormalFloat: QLoRA's codebook with per-block absmax scales (kernel in quant/nf.cpp).
#include "quant/methods/common.h"
#include "quant/nf.h"

namespace lrq {

namespace {
class Nf final : public Method {
 public:
  explicit Nf(const Stage& s) {
    o_.bits = int(s.i("bits"));
    o_.block = s.i("block");
  }
  Quantized quantize(const Tensor& W, const SiteStats&, const QuantJob&) const override {
    return {std::make_unique<PackedLinear>(nf_quantize(W, o_), InputTransform{},
                                          std::vector<LowRankPart>{})};
  }

 private:
  NfOptions o_;
};
}  // namespace

std::unique_ptr<Method> make_nf(const Stage& s) { return std::make_unique<Nf>(s); }

}  // namespace lrq
