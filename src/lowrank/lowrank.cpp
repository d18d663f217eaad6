// The entry point: input checks, input-channel weighting, dispatch to the method.
#include "lowrank/lowrank.h"

#include <cmath>

#include "lowrank/extraction.h"

namespace lrq {

LowRank low_rank(const Tensor& A, int max_rank, const LowRankSpec& spec,
                 const LowRankControl& control) {
  using namespace lowrank_detail;
  if (A.ndim() != 2) fail("low_rank", "a matrix is required, got {}", A.str());
  const DType t = A.dtype();
  if (t != DType::F32 && t != DType::F64 && t != DType::F16 && t != DType::BF16)
    fail("low_rank", "a floating-point matrix is required, got {}", A.str());
  const int64_t m = A.dim(0), n = A.dim(1);
  if (max_rank < 0 || max_rank > std::min(m, n))
    fail("low_rank", "max_rank {} is outside [0, min(m, n) = {}] for {}", max_rank, std::min(m, n),
         A.str());

  Tensor W = A.to(DType::F32);
  Tensor inv_scale;
  if (control.col_scale.defined()) {
    const Tensor& s = control.col_scale;
    if (s.numel() != n || (s.dtype() != DType::F32 && s.dtype() != DType::F64 &&
                           s.dtype() != DType::F16 && s.dtype() != DType::BF16))
      fail("low_rank", "col_scale {} does not fit {} (n = {} float values needed)", s.str(), A.str(), n);
    const Tensor sh = s.to(Device::CPU).to(DType::F32);
    Tensor inv = Tensor::empty({n});
    for (int64_t j = 0; j < n; ++j) {
      const float v = sh.at<float>(j);
      if (!(v > 0) || !std::isfinite(v) || !std::isfinite(1 / v))
        fail("low_rank", "col_scale[{}] = {} is not a positive finite number with a finite inverse", j, v);
      inv.at<float>(j) = 1 / v;
    }
    if (t == DType::F32) W = W.clone();  // to(F32) returned A itself
    ops::scale(W, 1, {}, sh.reshape({n}).to(A.device()));
    inv_scale = inv.to(A.device());
  }
  const ops::NormStats stats = ops::norm_stats(W);
  if (!std::isfinite(stats.sumsq))
    fail("low_rank", "{} has non-finite entries (after weighting, if any)", A.str());

  Extraction ex(W, stats, max_rank, control);
  switch (spec.method) {
    case LowRankMethod::Svd: factor_svd(ex); break;
    case LowRankMethod::Rsvd: factor_rsvd(ex, spec); break;
    case LowRankMethod::R1: factor_r1(ex, spec); break;
    case LowRankMethod::Block: factor_block(ex, spec); break;
  }
  LowRank out = ex.finish();
  if (inv_scale.defined()) ops::scale(out.R, 1, {}, inv_scale);
  return out;
}

}  // namespace lrq
