// Round-to-nearest quantization and the group-grid helpers (see rtn_grid.h for the exact grids).
#include "quant/kernels/rtn_grid.h"

#include <omp.h>

#include <algorithm>
#include <limits>

#include "backend/ops.h"
#if defined(LRQ_WITH_CUDA)
#include "quant/cuda/quant_cuda.h"
#endif

namespace lrq {
namespace {

constexpr float kMinScale = 6.103515625e-05f;  // 2^-14, smallest normal fp16
constexpr float kMaxAbsWeight = 32768.f;
constexpr int64_t kRowsPerTask = 64;

float round_to_f16(float x) { return f16_to_f32(f32_to_f16(x)); }

}  // namespace

int64_t resolve_grid_options(const RtnOptions& opt, int64_t cols, std::string_view where) {
  if (opt.bits != 2 && opt.bits != 3 && opt.bits != 4 && opt.bits != 8)
    fail(where, "bits must be 2, 3, 4 or 8, got {}", opt.bits);
  const int64_t g = opt.group == 0 ? cols : opt.group;
  if (g <= 0 || g % 32 != 0)
    fail(where, "group {} must be a positive multiple of 32 ({})", g,
         opt.group == 0 ? "per-row groups span all columns" : "the packing unit");
  if (cols % g != 0)
    fail(where, "{} columns is not a multiple of group {} (pad the matrix or pick another group)",
         cols, g);
  if (opt.clip_search && (!(opt.clip_min > 0.f && opt.clip_min <= 1.f) || opt.clip_steps < 1))
    fail(where, "clip search needs 0 < clip_min <= 1 and clip_steps >= 1, got {} and {}",
         opt.clip_min, opt.clip_steps);
  return g;
}

void check_quantizable(const Tensor& W, std::string_view where) {
  if (!W.defined() || W.dtype() != DType::F32 || W.ndim() != 2 || W.numel() == 0)
    fail(where, "weight must be a non-empty F32 matrix, got {}", W.defined() ? W.str() : "none");
  if (!W.is_cpu()) {
#if !defined(LRQ_WITH_CUDA)
    fail(where, "weight {} is on the GPU but this build has no CUDA backend", W.str());
#endif
    // One reduction on the device: a NaN makes sumsq NaN, an infinity makes it infinite.
    const ops::NormStats st = ops::norm_stats(W);
    if (!std::isfinite(st.sumsq) || !(st.amax <= kMaxAbsWeight))
      fail(where, "weight {} has a non-finite element or one beyond +-{} (max |w| {})", W.str(),
           kMaxAbsWeight, st.amax);
    return;
  }
  const float* w = W.data<float>();
  for (int64_t i = 0, n = W.numel(); i < n; ++i)
    if (!(std::fabs(w[i]) <= kMaxAbsWeight))
      fail(where, "weight element {} is {} (non-finite or beyond +-{}, which fp16 scales cannot hold)",
           i, w[i], kMaxAbsWeight);
}

std::vector<float> importance_vector(const Tensor& importance, int64_t cols,
                                     std::string_view where) {
  if (!importance.defined()) return std::vector<float>(size_t(cols), 1.f);
  if (importance.ndim() != 1 || importance.dim(0) != cols ||
      (importance.dtype() != DType::F32 && importance.dtype() != DType::F64))
    fail(where, "importance must be an F32/F64 vector of {} entries, got {}", cols,
         importance.str());
  const Tensor host = importance.to(Device::CPU);  // a vector: the copy is cheap
  std::vector<float> v(static_cast<size_t>(cols));
  convert_to_f32(host.raw(), host.dtype(), v.data(), v.size());
  for (int64_t i = 0; i < cols; ++i)
    if (!(v[size_t(i)] >= 0.f && std::isfinite(v[size_t(i)])))
      fail(where, "importance[{}] = {} is not a finite non-negative number", i, v[size_t(i)]);
  return v;
}

void minmax_grid(float lo, float hi, int bits, bool symmetric, float shrink, float* scale,
                 float* offset) {
  const float maxq = float((1 << bits) - 1), m = float(1 << (bits - 1));
  if (symmetric) {
    const float amax = std::max(std::fabs(lo), std::fabs(hi)) * shrink;
    const float s = std::max(round_to_f16(amax / (m - 1.f)), kMinScale);
    *scale = s;
    *offset = -m * s;
    return;
  }
  lo = std::min(lo, 0.f) * shrink;
  hi = std::max(hi, 0.f) * shrink;
  const float s = std::max(round_to_f16((hi - lo) / maxq), kMinScale);
  const float zero = std::clamp(std::nearbyint(-lo / s), 0.f, maxq);
  *scale = s;
  *offset = round_to_f16(-zero * s);
}

void fit_grids(const float* w, int64_t n, int64_t stride_k, int64_t count, int64_t stride_r,
               const float* importance, const RtnOptions& opt, float* scale, float* offset) {
  const float maxq = float((1 << opt.bits) - 1);
  std::vector<float> lo(size_t(count), std::numeric_limits<float>::infinity());
  std::vector<float> hi(size_t(count), -std::numeric_limits<float>::infinity());
  // k outer, r inner: GPTQ calls this on a column-major slab where r is the contiguous index.
  for (int64_t k = 0; k < n; ++k) {
    const float* wk = w + k * stride_k;
    for (int64_t r = 0; r < count; ++r) {
      lo[size_t(r)] = std::min(lo[size_t(r)], wk[r * stride_r]);
      hi[size_t(r)] = std::max(hi[size_t(r)], wk[r * stride_r]);
    }
  }
  for (int64_t r = 0; r < count; ++r)
    minmax_grid(lo[size_t(r)], hi[size_t(r)], opt.bits, opt.symmetric, 1.f, &scale[r], &offset[r]);
  if (!opt.clip_search) return;

  auto weighted_error = [&](const float* s, const float* o, double* e) {
    std::fill(e, e + count, 0.0);
    for (int64_t k = 0; k < n; ++k) {
      const float* wk = w + k * stride_k;
      const double imp = importance ? importance[k] : 1.0;
      for (int64_t r = 0; r < count; ++r) {
        const float v = wk[r * stride_r];
        const double d = v - dequantize_code(quantize_code(v, s[r], o[r], maxq), s[r], o[r]);
        e[r] += imp * d * d;
      }
    }
  };
  std::vector<double> best(static_cast<size_t>(count)), err(static_cast<size_t>(count));
  std::vector<float> cs(static_cast<size_t>(count)), co(static_cast<size_t>(count));
  weighted_error(scale, offset, best.data());
  for (int step = 1; step <= opt.clip_steps; ++step) {
    const float c = 1.f - float(step) * (1.f - opt.clip_min) / float(opt.clip_steps);
    for (int64_t r = 0; r < count; ++r)
      minmax_grid(lo[size_t(r)], hi[size_t(r)], opt.bits, opt.symmetric, c, &cs[size_t(r)],
                  &co[size_t(r)]);
    weighted_error(cs.data(), co.data(), err.data());
    for (int64_t r = 0; r < count; ++r)
      if (err[size_t(r)] < best[size_t(r)]) {
        best[size_t(r)] = err[size_t(r)];
        scale[r] = cs[size_t(r)];
        offset[r] = co[size_t(r)];
      }
  }
}

PackedWeight rtn_quantize(const Tensor& W, const RtnOptions& opt, const Tensor& importance) {
  const char* where = "rtn";
  check_quantizable(W, where);
  const int64_t rows = W.dim(0), cols = W.dim(1);
  const int64_t g = resolve_grid_options(opt, cols, where), ng = cols / g;
  const std::vector<float> imp = importance_vector(importance, cols, where);
#if defined(LRQ_WITH_CUDA)
  if (W.device() == Device::CUDA) return quant_cuda::rtn(W, opt, g, imp);
#endif
  const float maxq = float((1 << opt.bits) - 1);

  Tensor codes = Tensor::empty({rows, cols}, DType::U8);
  Tensor scales = Tensor::empty({rows, ng}, DType::F16);
  Tensor offsets = opt.symmetric ? Tensor() : Tensor::empty({rows, ng}, DType::F16);
  const float* w = W.data<float>();
  uint8_t* c = codes.data<uint8_t>();
  uint16_t* sc = scales.data<uint16_t>();
  uint16_t* of = opt.symmetric ? nullptr : offsets.data<uint16_t>();
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel
  {
    std::vector<float> s(static_cast<size_t>(kRowsPerTask)), o(static_cast<size_t>(kRowsPerTask));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t r0 = task * kRowsPerTask, r1 = std::min(rows, r0 + kRowsPerTask);
      for (int64_t gi = 0; gi < ng; ++gi) {
        const int64_t c0 = gi * g;
        fit_grids(w + r0 * cols + c0, g, 1, r1 - r0, cols, imp.data() + c0, opt, s.data(),
                  o.data());
        for (int64_t r = r0; r < r1; ++r) {
          const float rs = s[size_t(r - r0)], ro = o[size_t(r - r0)];
          sc[r * ng + gi] = f32_to_f16(rs);
          if (of) of[r * ng + gi] = f32_to_f16(ro);
          for (int64_t k = c0; k < c0 + g; ++k)
            c[r * cols + k] = uint8_t(quantize_code(w[r * cols + k], rs, ro, maxq));
        }
      }
    }
  }
  return PackedWeight::pack(codes, scales, offsets, Tensor(), opt.bits, g,
                            opt.symmetric ? QuantFormat::Symmetric : QuantFormat::Affine);
}

}  // namespace lrq
