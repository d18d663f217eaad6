#include "calib/stats.h"

#include <cmath>

#include "backend/ops.h"

namespace lrq {

SiteStats::SiteStats(int64_t in, Device device)
    : in_(in), H_(Tensor::zeros({in, in}, DType::F64, device)),
      mean_abs_(Tensor::zeros({in}, DType::F64, device)),
      scratch_(Tensor::empty({in, in}, DType::F32, device)) {}

SiteStats SiteStats::to(Device device) const {
  LRQ_ASSERT(final_);
  SiteStats s;
  s.in_ = in_;
  s.tokens_ = tokens_;
  s.H_ = H_.to(device);
  s.mean_abs_ = mean_abs_.to(device);
  s.final_ = true;
  return s;
}

void SiteStats::add(const Tensor& x) {
  LRQ_ASSERT(!final_ && x.ndim() == 2 && x.dim(1) == in_);
  if (device() != Device::CPU) {
    // On the GPU the F32 window products pile up in scratch_ (cuBLAS beta = 1) and reach the
    // F64 sum every kFlushTokens tokens: the F64 read-modify-write of a 11008^2 H per 2048-token
    // window cost about as much as the product itself. The F32 partial sum then carries the
    // rounding of one kFlushTokens-long window product, not more.
    Tensor xd = x.to(device());
    ops::xtx(xd, scratch_, pending_ > 0);
    pending_ += xd.dim(0);
    if (pending_ >= kFlushTokens) flush();
    ops::add_abs_col_sums(xd, mean_abs_);
    tokens_ += xd.dim(0);
    return;
  }
  Tensor xc = x.to(Device::CPU);
  ops::xtx(xc, scratch_, false);
  ops::accumulate_symmetric(H_, scratch_);
  double* m = mean_abs_.data<double>();
  const float* X = xc.data<float>();
  for (int64_t t = 0; t < xc.dim(0); ++t)
    for (int64_t j = 0; j < in_; ++j) m[j] += std::fabs(X[t * in_ + j]);
  tokens_ += xc.dim(0);
}

void SiteStats::flush() {
  if (pending_ == 0) return;
  ops::accumulate_symmetric(H_, scratch_);
  pending_ = 0;
}

void SiteStats::finalize() {
  LRQ_ASSERT(!final_ && tokens_ > 0);
  flush();
  final_ = true;
  const double inv = 1.0 / double(tokens_);
  if (device() != Device::CPU) {
    ops::scale(H_, inv);
    ops::scale(mean_abs_, inv);
    scratch_ = Tensor();
    return;
  }
  double* H = H_.data<double>();
  for (int64_t i = 0; i < in_ * in_; ++i) H[i] *= inv;
  double* m = mean_abs_.data<double>();
  for (int64_t j = 0; j < in_; ++j) m[j] *= inv;
  scratch_ = Tensor();
}

}  // namespace lrq
