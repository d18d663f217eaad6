#include "quant/kernels/flexible_rank.h"

#include <cmath>

namespace lrq {

Tensor activation_scale(const Tensor& mean_abs, double e) {
  const int64_t n = mean_abs.numel();
  const Tensor ma = mean_abs.to(Device::CPU);  // n values: statistics may live on the GPU
  Tensor a = Tensor::empty({n});
  std::vector<double> v(n);
  double lsum = 0;
  for (int64_t j = 0; j < n; ++j) {
    v[j] = std::pow(std::max(ma.data<double>()[j], 1e-8), e);
    lsum += std::log(v[j]);
  }
  const double g = std::exp(lsum / double(n));
  for (int64_t j = 0; j < n; ++j) a.data<float>()[j] = float(v[j] / g);
  return a;
}

LowRank flexible_low_rank(const Tensor& W, const SiteStats& st, const FlexRankOptions& o,
                          uint64_t seed) {
  const int64_t m = W.dim(0), n = W.dim(1);
  const double d = o.bits;
  int cap = o.fixed_rank > 0 ? o.fixed_rank
                             : int(std::min<int64_t>(o.max_rank, std::min(m, n)));
  // k <= 1 + x bounds the flexible rank before any extraction.
  if (o.fixed_rank == 0)
    cap = int(std::min<int64_t>(cap, int64_t(o.x * d * double(m) * n / (16.0 * double(m + n)))));
  if (cap < 1) return {};
  LowRankControl c;
  c.col_scale = activation_scale(st.mean_abs(), o.act);
  c.track_amax = o.fixed_rank == 0;
  if (o.fixed_rank == 0) {
    c.stop = [&](const RankStep& s) {
      // The weight is represented to F32 rounding: nothing is left to quantize.
      if (s.residual_amax <= 1e-6 * s.amax_curve[0]) return StopDecision::Stop;
      const double q = (d + std::log2(s.amax_curve[0] / std::max(s.residual_amax, 1e-30))) / d;
      const double k = 1.0 + 16.0 * s.rank * double(m + n) / (d * double(m) * n);
      if (k > q || k > 1.0 + o.x) return StopDecision::StopDropLast;
      if (s.rank >= 4) {
        double drop = 0;
        for (int i = s.rank - 3; i <= s.rank; ++i)
          drop += (s.amax_curve[i - 1] - s.amax_curve[i]) / s.amax_curve[i - 1];
        if (drop / 4.0 < o.flat) return StopDecision::StopDropLast;
      }
      return StopDecision::Continue;
    };
  }
  LowRankSpec spec = o.spec;
  spec.seed = seed;
  return low_rank(W, cap, spec, c);
}

}  // namespace lrq
