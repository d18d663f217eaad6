// LRQ's learned weight scaling (arXiv 2407.11534, built on FlexRound), one projection at a time;
// the block-level training that drives it is quant/methods/lrq.cpp.
//
// Parameters (per projection, m x n, groups of gs input columns, ng = n / gs):
//   d1 [m, ng]   log of the stored scale: s1 = exp(d1)
//   L [m, k], U [k, n]   the low-rank part of the divisor's log (rank mode), or
//   E [m, n]             an element-wise log divisor (full mode: FlexRound)
//   r [m], c [n]         row and column terms
// divisor S = exp(d1 + L U + r 1^T + 1 c^T) (E in place of L U), t = W / S,
// q = clamp(round(t), -z, 2^b - 1 - z) with the integer zero point z [m, ng] fixed at init, and
// W_hat = s1 q. Rounding passes gradients straight through (STE); clamped entries pass none
// (the test is on the unrounded t). At init L = 0 (U uniform in +-1/sqrt(n)), E = r = c = 0,
// so training starts at round-to-nearest on the searched grid. The trained weight is an
// ordinary affine packed weight (codes q + z, scale s1, offset -z s1 in F16): no inference cost.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "formats/packed_weight.h"

namespace lrq {

struct LrqOptions {
  int bits = 4;
  int64_t group = 0;      ///< input columns per scale; 0 = one group per row (per channel)
  bool clip = false;      ///< search the range fraction (L_p error, p = 2.4); else min/max
  int64_t rank = 0;       ///< k; 0 = min(m, n) / 4 (the public code's rule scaled to width)
  bool full = false;      ///< element-wise log divisor (FlexRound) instead of L U
  double lp = 2.4;        ///< the grid search's error norm
};

struct LrqParams {
  Tensor d1, L, U, E, r, c;
  /// The defined tensors, in a fixed order (the optimizer's state follows it).
  std::vector<Tensor*> list();
  /// Zero tensors shaped like the defined ones.
  LrqParams zeros_like() const;
};

class LrqScales {
 public:
  /// The searched grid and the init parameters for W (F32 [m, n], CPU); `seed` draws U.
  static LrqScales init(const Tensor& W, const LrqOptions& o, uint64_t seed);

  /// The same parameters and weight in `dtype` (F64 for gradient checks).
  LrqScales as(DType dtype) const;

  /// W_hat [m, n] in the parameters' dtype. With `round` false the rounding is the identity
  /// (the surrogate whose exact gradient the STE backward is; gradient checks only).
  Tensor forward(bool round = true) const;
  /// Adds dL/dparams into `grads` (shaped like params) for G = dL/dW_hat.
  void backward(const Tensor& G, LrqParams& grads) const;
  /// The quantized weight: codes q + z, F16 scales s1 and offsets -z s1.
  PackedWeight pack() const;

  LrqParams params;
  int64_t rows() const { return W_.dim(0); }
  int64_t cols() const { return W_.dim(1); }
  int64_t rank() const { return params.L.defined() ? params.L.dim(1) : 0; }

 private:
  Tensor W_, zero_;  // zero points [m, ng], integers as the params' dtype
  int bits_ = 4;
  int64_t group_ = 0;
};

}  // namespace lrq
