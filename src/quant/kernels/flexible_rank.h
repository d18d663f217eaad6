// R1-FLR (FLRQ's flexible rank) on an activation-scaled weight, shared by FLRQ and LoPRo.
#pragma once
#include "calib/stats.h"
#include "lowrank/lowrank.h"

namespace lrq {

struct FlexRankOptions {
  double bits = 3;        // d: residual bits
  double x = 0.2;         // storage-growth bound k <= 1 + x
  double flat = 1e-3;     // amax-flattening threshold (mean relative drop over 4 ranks)
  double act = 0.5;       // activation-scaling exponent (0: none)
  int fixed_rank = 0;     // > 0: that rank, no rule
  int max_rank = 256;
  LowRankSpec spec;       // the sketch
};

/// Input-channel scale mean|x|^e normalized to geometric mean 1 (F32 [n] on the CPU; mean_abs,
/// F64 [n], may be on the GPU).
Tensor activation_scale(const Tensor& mean_abs, double exponent);

/// Factors W (F32 m x n) at the rank R1-FLR chooses (or the fixed rank): the sketch runs on
/// W diag(a) and stops when storage growth k = 1 + 16 r (m+n)/(d m n) exceeds the precision
/// gain q = (d + log2(amax W / amax residual))/d or 1 + x, or the amax curve flattens.
/// Returns the factors with R unscaled (L R ~ W) and the amax curve of the scaled residual.
/// The factors live on W's device (the sketch runs there).
LowRank flexible_low_rank(const Tensor& W, const SiteStats& st, const FlexRankOptions& o,
                          uint64_t seed);

}  // namespace lrq
