// R1-Sketch (FLRQ, arXiv 2601.05684): rank-1 power iteration from one Gaussian vector per rank,
// deflating implicitly. No QR and no small SVD, but every product is a matrix-vector one.
#include <cmath>

#include "lowrank/extraction.h"

namespace lrq::lowrank_detail {
namespace {

// 1/x as a gemv scale; 0 when x is zero (the residual vanished) or too small for F32.
double inverse(double x) {
  const float r = float(1.0 / x);
  return x > 0 && std::isfinite(r) ? r : 0.0;
}

}  // namespace

void factor_r1(Extraction& ex, const LowRankSpec& spec) {
  std::mt19937_64 rng(spec.seed);
  const Device dev = ex.device();
  Tensor p = Tensor::empty({ex.rows()}, DType::F32, dev), k = Tensor::empty({ex.cols()}, DType::F32, dev);
  while (!ex.done()) {
    // p = (E E^T)^it E s, renormalized after every product so no power of sigma overflows.
    ex.apply(gaussian({ex.cols()}, rng, dev), p);
    for (int t = 0; t < spec.iters; ++t) {
      ex.apply_t(p, k, inverse(norm(p)));
      ex.apply(k, p, inverse(norm(k)));
    }
    // u = p/|p|, k = E^T u; the piece u k^T = u u^T E, of norm |k|, split as (|k| u)(k/|k|)^T.
    const double np = norm(p);
    ex.apply_t(p, k, inverse(np));
    const double sigma = norm(k);
    ops::scale(p, sigma * inverse(np));
    ops::scale(k, inverse(sigma));
    ex.push(p, k, sigma);
  }
}

}  // namespace lrq::lowrank_detail
