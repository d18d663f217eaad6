// NormalFloat codebooks and block-absmax quantization (construction in nf_codebook.h).
#include "quant/kernels/nf_codebook.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "quant/kernels/rtn_grid.h"

namespace lrq {
namespace {

// Phi^-1(p) by bisection on erfc: slow but exact to double precision, and only called 2^b times.
double normal_quantile(double p) {
  double lo = -40, hi = 40;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

}  // namespace

Tensor nf_codebook(int bits) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    fail("nf", "bits must be 2, 3, 4 or 8, got {}", bits);
  const int n = 1 << bits, npos = n / 2, nneg = n / 2 - 1;
  const double pmax = 1.0 - 0.5 * (1.0 / (2.0 * (n - 1)) + 1.0 / (2.0 * n));
  const double top = normal_quantile(pmax);
  std::vector<double> v{0.0};
  for (int i = 0; i < npos; ++i) v.push_back(normal_quantile(pmax - i * (pmax - 0.5) / npos) / top);
  for (int i = 0; i < nneg; ++i) v.push_back(-normal_quantile(pmax - i * (pmax - 0.5) / nneg) / top);
  std::sort(v.begin(), v.end());
  Tensor cb = Tensor::empty({n});
  for (int i = 0; i < n; ++i) cb.at<float>(i) = float(v[size_t(i)]);
  return cb;
}

PackedWeight nf_quantize(const Tensor& W, const NfOptions& opt) {
  const char* where = "nf";
  check_quantizable(W, where);
  if (!W.is_cpu()) fail(where, "weight {} must be on the CPU (NF has no GPU path)", W.str());
  const int64_t rows = W.dim(0), cols = W.dim(1);
  RtnOptions grid;
  grid.bits = opt.bits;
  grid.group = opt.block;
  const int64_t blk = resolve_grid_options(grid, cols, where), nb = cols / blk;
  const Tensor cb = nf_codebook(opt.bits);
  const int n = 1 << opt.bits;
  const float* book = cb.data<float>();
  // Midpoints between neighbouring codewords: code = number of midpoints below w / scale.
  std::vector<float> mid(size_t(n - 1));
  for (int i = 0; i + 1 < n; ++i) mid[size_t(i)] = 0.5f * (book[i] + book[i + 1]);
  const uint8_t zero_code = uint8_t(n / 2 - 1);

  Tensor codes = Tensor::empty({rows, cols}, DType::U8);
  Tensor scales = Tensor::empty({rows, nb}, DType::F16);
  const float* w = W.data<float>();
  uint8_t* c = codes.data<uint8_t>();
  uint16_t* sc = scales.data<uint16_t>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const float* x = w + r * cols + b * blk;
      float amax = 0;
      for (int64_t k = 0; k < blk; ++k) amax = std::max(amax, std::fabs(x[k]));
      const uint16_t h = f32_to_f16(amax);
      const float s = f16_to_f32(h);
      sc[r * nb + b] = h;
      uint8_t* out = c + r * cols + b * blk;
      for (int64_t k = 0; k < blk; ++k)
        out[k] = s == 0.f ? zero_code
                          : uint8_t(std::lower_bound(mid.begin(), mid.end(), x[k] / s) - mid.begin());
    }
  return PackedWeight::pack(codes, scales, Tensor(), cb, opt.bits, blk, QuantFormat::Codebook);
}

}  // namespace lrq
