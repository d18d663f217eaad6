#include "quant/methods/common.h"

#include <string>
#include <vector>

#include "core/error.h"
#include "formats/ggml_linear.h"
#include "quant/kernels/kquant_grid.h"

namespace lrq {

Tensor diag_h(const SiteStats& st) {
  const int64_t n = st.in();
  const std::vector<double> h = hessian_diagonal(st.H());
  Tensor d = Tensor::empty({n});
  for (int64_t i = 0; i < n; ++i) d.data<float>()[i] = float(h[size_t(i)]);
  return d;
}

std::shared_ptr<const SiteTensors> site_tensors(const SiteStats& st, Device device) {
  if (st.H().device() == device && st.mean_abs().device() == device)
    return std::make_shared<const SiteTensors>(SiteTensors{st.H(), st.mean_abs()});
  return st.memo<SiteTensors>("site_tensors/" + std::string(device_name(device)), [&] {
    return std::make_shared<const SiteTensors>(
        SiteTensors{st.H().to(device), st.mean_abs().to(device)});
  });
}

std::unique_ptr<PackedLinear> from_gptq(GptqResult r, InputTransform t) {
  if (!r.perm.empty()) {
    LRQ_ASSERT(!t.find<PermuteStage>());
    t.permute(std::move(r.perm));
  }
  return std::make_unique<PackedLinear>(std::move(r.q), std::move(t), std::vector<LowRankPart>{});
}

std::unique_ptr<LowRankLinear> quantize_on_grid(const Tensor& W, const GridChoice& grid,
                                                const GptqOptions* gptq, const Tensor& H,
                                                const GptqFactor* factor,
                                                const Tensor& importance, InputTransform t,
                                                GptqResult* res) {
  GptqResult local;
  if (!res) res = &local;
  if (!grid.kquant_for(W.dim(1))) {
    if (!gptq) {
      res->q = rtn_quantize(W, grid.grid, grid.grid.clip_search ? importance : Tensor());
      return std::make_unique<PackedLinear>(std::move(res->q), std::move(t),
                                            std::vector<LowRankPart>{});
    }
    GptqOptions o = *gptq;
    o.grid = grid.grid;
    *res = gptq_quantize(W, H, o, factor);
    return from_gptq(*res, std::move(t));
  }
  // K-quants are fitted and packed on the host.
  const Tensor Wc = W.to(Device::CPU);
  Tensor blocks;
  if (!gptq) {
    blocks = kquant_rtn(Wc, *grid.kquant, importance);
  } else {
    blocks = kquant_gptq(Wc, H.to(Device::CPU), *grid.kquant, *gptq,
                         factor && factor->U.is_cpu() ? factor : nullptr, res);
    if (!res->perm.empty()) t.permute(res->perm);
  }
  return std::make_unique<GgmlLinear>(*grid.kquant, blocks, W.dim(1), std::move(t),
                                      std::vector<LowRankPart>{});
}

}  // namespace lrq
