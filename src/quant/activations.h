// Preparing a model for activation quantization (recipe options a8=tensor and smooth=ALPHA):
// one pass of the calibration windows through the full-precision model records every site's
// per-channel max |x|; SmoothQuant's migration is folded into the weights from those maxima,
// and the static per-tensor steps of a8=tensor are derived from the same maxima. Runs before
// the method quantizes anything, so every method quantizes the smoothed W diag(s).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "model/llama.h"
#include "quant/recipe.h"

namespace lrq {

/// Per layer, per site (Site order), per input channel: max |x| over the calibration windows.
using SiteMaxima = std::vector<std::array<std::vector<float>, 4>>;

/// The maxima of the model as it is (CPU pass, window by window; max is exact, so the result
/// does not depend on threads).
SiteMaxima site_maxima(const Model& model, const std::vector<std::vector<int32_t>>& windows,
                       bool progress = false);

/// Folds SmoothQuant with exponent alpha into `model` (dense projections only: an Error
/// otherwise): per site, s_j = max|X_j|^alpha / max_rows |W_:j|^(1-alpha) over the projections
/// that read the site (1 where either maximum is zero), then
///   attn_in:  input norm / s, q/k/v columns * s
///   o_in:     v_proj rows / s, o_proj columns * s, one s per v row: its max over the query
///             heads that share the KV head (GQA), every such o_proj column scaled alike
///   mlp_in:   post-attention norm / s, gate/up columns * s
///   down_in:  up_proj rows / s, down_proj columns * s
/// Without activation quantization the function is unchanged up to F32 rounding. Returns the
/// scales, per layer and site, that the site's activations are now divided by.
SiteMaxima fold_smoothing(Model& model, const SiteMaxima& maxima, double alpha);

/// What quantize_model does first when the recipe has activation options: smoothing (when
/// asked) and the inference settings, with a8=tensor's static steps = max over channels of
/// max|x_j| / s_j, divided by 127. The settings are installed in the model after quantizing.
ActivationQuant prepare_activations(Model& model, const std::vector<std::vector<int32_t>>& windows,
                                    const ActivationSpec& spec, bool progress = false);

}  // namespace lrq
