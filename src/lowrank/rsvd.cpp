// Randomized SVD (Halko, Martinsson and Tropp 2011, algorithms 4.4 and 5.1): one sketch of
// max_rank + p columns of the whole matrix.
#include "lowrank/extraction.h"

namespace lrq::lowrank_detail {

void factor_rsvd(Extraction& ex, const LowRankSpec& spec) {
  if (ex.done()) return;
  const int want = ex.remaining();
  const int64_t s = std::min<int64_t>(int64_t(want) + spec.oversample, std::min(ex.rows(), ex.cols()));
  std::mt19937_64 rng(spec.seed);
  push_leading_triplets(ex, range_finder(ex, s, spec.iters, rng), want);
}

}  // namespace lrq::lowrank_detail
