// The whole-model training pieces on the CPU (op_list.h, "whole-model training"). Every sum runs
// in an order fixed by the shape, so the results do not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"

namespace lrq::cpu {
namespace {

template <class F>
double cross_entropy_impl(const Tensor& logits, std::span<const int32_t> targets,
                          const Tensor& dlogits, double scale) {
  const int64_t T = logits.dim(0), V = logits.dim(1);
  const F* x = logits.data<F>();
  F* d = dlogits.defined() ? dlogits.data<F>() : nullptr;
  std::vector<double> row_loss(size_t(T), 0.0);
#pragma omp parallel for schedule(static) if (T * V > (1 << 16))
  for (int64_t t = 0; t < T; ++t) {
    const F* r = x + t * V;
    F* o = d ? d + t * V : nullptr;
    const int32_t target = targets[size_t(t)];
    if (target < 0) {
      if (o) std::fill(o, o + V, F(0));
      continue;
    }
    F mx = r[0];
    for (int64_t j = 1; j < V; ++j) mx = std::max(mx, r[j]);
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(double(r[j]) - double(mx));
    const double lse = double(mx) + std::log(s);
    row_loss[size_t(t)] = lse - double(r[target]);
    if (o) {
      // Read before written: o may alias r.
      for (int64_t j = 0; j < V; ++j)
        o[j] = F(scale * (std::exp(double(r[j]) - lse) - (j == target ? 1.0 : 0.0)));
    }
  }
  double total = 0;
  for (double l : row_loss) total += l;
  return total;
}

template <class F>
void embedding_backward_impl(std::span<const int32_t> ids, const Tensor& dout,
                             const Tensor& dtable) {
  const int64_t T = dout.dim(0), d = dout.dim(1);
  constexpr int64_t kCols = 64;
  const int64_t slices = (d + kCols - 1) / kCols;
  const F* g = dout.data<F>();
  F* tab = dtable.data<F>();
#pragma omp parallel for schedule(static) if (T * d > (1 << 15))
  for (int64_t sl = 0; sl < slices; ++sl) {
    const int64_t c0 = sl * kCols, c1 = std::min(d, c0 + kCols);
    for (int64_t t = 0; t < T; ++t) {
      F* row = tab + int64_t(ids[size_t(t)]) * d;
      for (int64_t i = c0; i < c1; ++i) row[i] += g[t * d + i];
    }
  }
}

}  // namespace

double cross_entropy(const Tensor& logits, std::span<const int32_t> targets,
                     const Tensor& dlogits, double scale) {
  if (logits.dtype() == DType::F64)
    return cross_entropy_impl<double>(logits, targets, dlogits, scale);
  return cross_entropy_impl<float>(logits, targets, dlogits, scale);
}

void embedding_backward(std::span<const int32_t> ids, const Tensor& dout, const Tensor& dtable) {
  if (dout.dtype() == DType::F64) embedding_backward_impl<double>(ids, dout, dtable);
  else embedding_backward_impl<float>(ids, dout, dtable);
}

void lords_ste_backward(const Tensor& W, const Tensor& S, const Tensor& codes,
                        const Tensor& codebook, const Tensor& G, const Tensor& dW,
                        const Tensor& dS) {
  const int64_t n = W.numel(), K = codebook.numel();
  const float *w = W.data<float>(), *s = S.data<float>(), *g = G.data<float>();
  const float* book = codebook.data<float>();
  const uint8_t* c = codes.data<uint8_t>();
  float* dw = dW.defined() ? dW.data<float>() : nullptr;
  float* ds = dS.defined() ? dS.data<float>() : nullptr;
  for (int64_t e = 0; e < n; ++e)
    if (c[e] >= K)
      fail("", "lords_ste_backward: code {} at {} is outside the codebook of {}", c[e], e, K);
  const float lo = book[0], hi = book[K - 1];
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t e = 0; e < n; ++e) {
    const float q = book[c[e]], ge = g[e];
    // |S| below 1e-30 is where lords_assign picks the entry nearest 0: treated as clamped.
    const bool tiny = std::abs(s[e]) < 1e-30f;
    const float t = tiny ? 0.f : w[e] / s[e];
    const bool inside = !tiny && t >= lo && t <= hi;
    if (dw) dw[e] = inside ? ge : 0.f;
    if (ds) ds[e] = inside ? ge * (q - t) : ge * q;
  }
}

}  // namespace lrq::cpu
