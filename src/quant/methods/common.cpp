#include "quant/methods/common.h"

#include <string>
#include <vector>

#include "core/error.h"

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

}  // namespace lrq
