// Round-to-nearest onto per-(row, group) uniform grids, and the grid helpers GPTQ reuses.
//
// Grids (b bits, maxq = 2^b - 1, m = 2^(b-1)); every scale/offset is rounded to fp16 before
// any code is chosen, so codes are nearest on the grid that is actually stored:
//   asymmetric: lo = min(min w, 0), hi = max(max w, 0) (the range always contains 0, so the zero
//               point is an integer in 0..maxq and |offset| <= |lo| + scale/2 fits fp16),
//               scale = (hi - lo) / maxq, zero = round(-lo / scale), offset = -zero * scale.
//   symmetric:  scale = max|w| / (m - 1), levels (c - m) * scale for c in 0..maxq (the extra
//               level -m * scale is reachable only after clipping).
//   code = clamp(round((w - offset) / scale), 0, maxq), ties to even; value = code*scale+offset.
// Scales are floored at 2^-14 (the smallest normal fp16) so an all-zero group stays exact.
// Clip search: for shrink c in {1, 1 - d, ..., clip_min} (d = (1 - clip_min) / clip_steps) the
// range is scaled by c and the grid with the least diagonal-H-weighted squared error
// sum_k importance[k] * (w_k - q(w_k))^2 is kept (importance = diag(H) from calibration, or 1).
// c = 1 is tried first and replaced only on a strictly smaller error, so clipping never
// increases that error.
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "formats/packed_weight.h"

namespace lrq {

struct RtnOptions {
  int bits = 4;             ///< 2, 3, 4 or 8
  int64_t group = 128;      ///< input columns per scale; 0 = one group per row
  bool symmetric = false;
  bool clip_search = false;
  float clip_min = 0.5f;    ///< smallest shrink ratio tried, in (0, 1]
  int clip_steps = 20;      ///< ratios tried besides 1
};

/// The group size the options mean for a matrix of `cols` columns (0 -> cols). Throws Error
/// naming `where` if bits, group or the clip grid are invalid for this matrix.
int64_t resolve_grid_options(const RtnOptions& opt, int64_t cols, std::string_view where);

/// Throws Error unless W is an F32 matrix (CPU, or GPU in a CUDA build) of finite values with |w| <= 32768 (so every scale
/// and offset fits fp16).
void check_quantizable(const Tensor& W, std::string_view where);

/// Uniform grid for values spanning [lo, hi], range scaled by `shrink`; see the file comment.
/// Returns scale and offset (fp16-exact); for symmetric grids offset = -2^(b-1) * scale.
void minmax_grid(float lo, float hi, int bits, bool symmetric, float shrink, float* scale,
                 float* offset);

/// Fits one grid per slice, with clip search if opt.clip_search. Slice r < count holds the n
/// values w[r * stride_r + k * stride_k], k < n; importance[k] weighs value k (null: 1).
/// Writes scale[r], offset[r].
void fit_grids(const float* w, int64_t n, int64_t stride_k, int64_t count, int64_t stride_r,
               const float* importance, const RtnOptions& opt, float* scale, float* offset);

/// The code (as a float in 0..maxq) nearest to w on the grid (scale, offset). Inline: GPTQ's
/// per-column loop calls it for every weight.
inline float quantize_code(float w, float scale, float offset, float maxq) {
  float q = std::nearbyint((w - offset) / scale);
  q = q > 0.f ? q : 0.f;  // NaN -> 0
  return q < maxq ? q : maxq;
}

/// The value of a code on the grid (exact for the affine format: code * scale is exact).
inline float dequantize_code(float code, float scale, float offset) {
  return code * scale + offset;
}

/// RTN of W (F32 [rows, cols], CPU or GPU) onto the grids above. importance: F32/F64 [cols],
/// >= 0, on any device, or undefined (uniform); used only by the clip search. Result: Affine or
/// Symmetric format, on W's device.
PackedWeight rtn_quantize(const Tensor& W, const RtnOptions& opt,
                          const Tensor& importance = Tensor());

/// importance as F32 [cols] values (ones if undefined). Throws Error if it is not a finite,
/// non-negative vector of `cols` entries.
std::vector<float> importance_vector(const Tensor& importance, int64_t cols,
                                     std::string_view where);

}  // namespace lrq
