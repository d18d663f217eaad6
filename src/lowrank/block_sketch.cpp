// Blocked adaptive sketch: the rsvd step repeated on the deflated residual, b ranks at a time.
// Per block it costs 2*it + 2 products with b + p columns where R1-Sketch costs b*(2*it + 2)
// matrix-vector products, and the stop rule still sees every rank: the block's triplets are
// pushed one by one, so extraction can end inside a block.
#include "lowrank/extraction.h"

namespace lrq::lowrank_detail {

void factor_block(Extraction& ex, const LowRankSpec& spec) {
  std::mt19937_64 rng(spec.seed);
  const int64_t cap = std::min(ex.rows(), ex.cols());
  while (!ex.done()) {
    const int want = std::min(spec.block, ex.remaining());
    const int64_t s = std::min<int64_t>(int64_t(want) + spec.oversample, cap);
    push_leading_triplets(ex, range_finder(ex, s, spec.iters, rng), want);
  }
}

}  // namespace lrq::lowrank_detail
