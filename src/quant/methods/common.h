// Small pieces the method files share: statistics views, result packing, the lr modifier.
#pragma once
#include <memory>

#include "formats/packed_linear.h"
#include "quant/kernels/gptq_solver.h"
#include "quant/method.h"
#include "quant/methods/options.h"

namespace lrq {

/// diag(H) of the site statistics, F32 [in] on the CPU (the clip search's importance); H may be
/// on the GPU (only the diagonal is copied).
Tensor diag_h(const SiteStats& st);
/// H and mean |x| of a site on `device`: the statistics' own tensors when they live there, else
/// copies made once per site (SiteStats::memo), so a GPU weight may come with CPU statistics.
struct SiteTensors {
  Tensor H, mean_abs;
};
std::shared_ptr<const SiteTensors> site_tensors(const SiteStats& st, Device device);
/// A PackedLinear of a GPTQ result (its act-order permutation becomes the input transform).
std::unique_ptr<PackedLinear> from_gptq(GptqResult r, InputTransform t = {});
/// W on a stage's grid (GridChoice): by RTN (gptq null; importance weighs the clip search or the
/// K-quant fit, undefined: uniform) or by GPTQ on H (factor: gptq_factor(H, *gptq) or null). A
/// PackedLinear on the uniform grid (act-order's permutation composed after `t`), a GgmlLinear on
/// a K-quant's (CPU); no low-rank branch. GPTQ's loss and warning land in *res when given.
std::unique_ptr<LowRankLinear> quantize_on_grid(const Tensor& W, const GridChoice& grid,
                                                const GptqOptions* gptq, const Tensor& H,
                                                const GptqFactor* factor,
                                                const Tensor& importance, InputTransform t = {},
                                                GptqResult* res = nullptr);
/// Whether this build has the CUDA backend (a method's runs_on(CUDA) when its path is generic).
constexpr bool gpu_build() {
#if defined(LRQ_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

/// `base` followed by the `lr` stage `s` (methods/lr.cpp): a low-rank correction of its error.
std::unique_ptr<Method> with_error_correction(std::unique_ptr<Method> base, const Stage& s);

}  // namespace lrq
