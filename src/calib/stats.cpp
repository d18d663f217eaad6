#include "calib/stats.h"

#include <cmath>

#include "backend/ops.h"

namespace lrq {

SiteStats::SiteStats(int64_t in)
    : in_(in), H_(Tensor::zeros({in, in}, DType::F64)), mean_abs_(Tensor::zeros({in}, DType::F64)),
      scratch_(Tensor::empty({in, in}, DType::F32)) {}

void SiteStats::add(const Tensor& x) {
  LRQ_ASSERT(!final_ && x.ndim() == 2 && x.dim(1) == in_);
  Tensor xc = x.to(Device::CPU);
  ops::gemm(xc, true, xc, false, scratch_);
  double* H = H_.data<double>();
  const float* S = scratch_.data<float>();
  const int64_t n = in_ * in_;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) H[i] += S[i];
  double* m = mean_abs_.data<double>();
  const float* X = xc.data<float>();
  for (int64_t t = 0; t < xc.dim(0); ++t)
    for (int64_t j = 0; j < in_; ++j) m[j] += std::fabs(X[t * in_ + j]);
  tokens_ += xc.dim(0);
}

void SiteStats::finalize() {
  LRQ_ASSERT(!final_ && tokens_ > 0);
  final_ = true;
  const double inv = 1.0 / double(tokens_);
  double* H = H_.data<double>();
  for (int64_t i = 0; i < in_ * in_; ++i) H[i] *= inv;
  double* m = mean_abs_.data<double>();
  for (int64_t j = 0; j < in_; ++j) m[j] *= inv;
  scratch_ = Tensor();
}

}  // namespace lrq
