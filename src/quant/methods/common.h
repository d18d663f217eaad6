// Small pieces the method files share: option structs from recipe stages, statistics views.
#pragma once
#include <memory>

#include "quant/flexible_rank.h"
#include "quant/gptq.h"
#include "quant/method.h"
#include "formats/packed_linear.h"
#include "quant/rtn.h"

namespace lrq {

/// Grid options (bits, group, sym, clip) of a stage.
RtnOptions grid_options(const Stage& s);
/// Grid plus GPTQ options (act_order, static_groups, damp, blocksize) of a stage.
GptqOptions gptq_options(const Stage& s);
/// R1-FLR options (bits, x, flat, act, rank, maxrank, sketch, it) of a low-rank stage.
FlexRankOptions flex_options(const Stage& s);
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

/// Whether this build has the CUDA backend (a method's runs_on(CUDA) when its path is generic).
constexpr bool gpu_build() {
#if defined(LRQ_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

// One factory per method file.
std::unique_ptr<Method> make_rtn(const Stage& s);
std::unique_ptr<Method> make_gptq(const Stage& s);
std::unique_ptr<Method> make_awq(const Stage& s);
std::unique_ptr<Method> make_nf(const Stage& s);
std::unique_ptr<Method> make_flrq(const Stage& s);
std::unique_ptr<Method> make_lopro(const Stage& s);

}  // namespace lrq
