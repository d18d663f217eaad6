// NormalFloat: QLoRA's codebook with per-block absmax scales (kernel in
// quant/kernels/nf_codebook.cpp).
#include "quant/kernels/nf_codebook.h"
#include "quant/methods/common.h"

namespace lrq {

namespace {

class Nf final : public Method {
 public:
  explicit Nf(const NfOptions& o) : o_(o) {}
  Quantized quantize(const Tensor& W, const SiteStats&, const QuantJob&) const override {
    return {std::make_unique<PackedLinear>(nf_quantize(W, o_), InputTransform{},
                                          std::vector<LowRankPart>{})};
  }

 private:
  NfOptions o_;
};

std::unique_ptr<Method> make(const Stage& s) {
  NfOptions o;
  o.bits = int(s.i("bits"));
  o.block = s.i("block");
  return std::make_unique<Nf>(o);
}

}  // namespace

LRQ_REGISTER_METHOD(
    nf, {.spec = {"nf", "NormalFloat codebook (QLoRA) with per-block absmax",
                  {{"bits", OptionSpec::Int, "4", "code width (bB shorthand)", {"2", "3", "4"}},
                   {"block", OptionSpec::Int, "64",
                    "weights per absmax block along the input (blockN)"}}},
         .order = 50,
         .layer = make});

}  // namespace lrq
