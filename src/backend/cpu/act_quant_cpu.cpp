// Fake quantization of activations (a8, kv8, a8=tensor): quantize-dequantize in F32. Every row
// is independent and every value is computed by the same rounded operations as the CUDA
// kernels (act_quant_cuda.cu; no fused multiply-adds: CMakeLists.txt compiles this file with
// -ffp-contract=off), so results do not depend on the thread count or the device.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_ops.h"

namespace lrq::cpu {

void fake_quant_rows(const Tensor& x, int bits) {
  const int64_t rows = x.dim(0), n = x.dim(1);
  const float maxq = float((1 << bits) - 1);
  float* p = x.data<float>();
#pragma omp parallel for schedule(static) if (rows * n > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = p + r * n;
    float lo = row[0], hi = row[0];
    for (int64_t j = 1; j < n; ++j) {
      lo = std::min(lo, row[j]);
      hi = std::max(hi, row[j]);
    }
    const float step = (hi - lo) / maxq;
    // A constant row is exact as it is; a non-finite one has no grid.
    if (!(hi > lo) || !std::isfinite(step) || !(step > 0)) continue;
    const float zero = std::rint(-lo / step);
    for (int64_t j = 0; j < n; ++j) {
      const float q = std::clamp(std::rint(row[j] / step) + zero, 0.0f, maxq);
      row[j] = (q - zero) * step;
    }
  }
}

void fake_quant_tensor(const Tensor& x, float step, int bits) {
  const int64_t n = x.numel();
  const float lo = -float(1 << (bits - 1)), hi = float((1 << (bits - 1)) - 1);
  float* p = x.data<float>();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) p[i] = std::clamp(std::rint(p[i] / step), lo, hi) * step;
}

}  // namespace lrq::cpu
