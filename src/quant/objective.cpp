#include "quant/objective.h"

#include <algorithm>
#include <cmath>

#include "backend/ops.h"
#include "core/error.h"

namespace lrq {

double hessian_error(const Tensor& D, const Tensor& H) {
  if (D.device() != H.device())
    fail("hessian_error", "D {} and H {} are on different devices", D.str(), H.str());
  if (!D.is_cpu()) {
    // On the GPU: D widened to F64 there (Tensor::to(DType) would detour through the host),
    // one F64 GEMM and one dot.
    Tensor A = D;
    if (D.dtype() != DType::F64) {
      A = Tensor::zeros(D.shape(), DType::F64, D.device());
      ops::accumulate(A, D);
    }
    Tensor AH = Tensor::empty(D.shape(), DType::F64, D.device());
    ops::gemm(A, false, H, false, AH);
    return ops::dot(A, AH);
  }
  Tensor A = D.to(DType::F64), AH = Tensor::empty(D.shape(), DType::F64);
  ops::gemm(A, false, H, false, AH);
  const double* x = A.data<double>();
  const double* y = AH.data<double>();
  double s = 0;
  for (int64_t i = 0; i < A.numel(); ++i) s += x[i] * y[i];
  return s;
}

Tensor difference(const Tensor& A, const Tensor& B) {
  if (A.device() != B.device() || A.numel() != B.numel() || A.dtype() != DType::F32 ||
      B.dtype() != DType::F32)
    fail("difference", "needs two F32 tensors of one size on one device, got {} and {}", A.str(),
         B.str());
  if (!A.is_cpu()) {
    // -B + A is A - B exactly (negation is exact), in two passes of the seam.
    Tensor C = B.clone();
    ops::scale(C.reshape({C.numel()}), -1.0);
    ops::add_inplace(C, A);
    return C;
  }
  Tensor C = A.clone();
  float* c = C.data<float>();
  const float* b = B.data<float>();
  for (int64_t i = 0; i < C.numel(); ++i) c[i] -= b[i];
  return C;
}

LayerErrors layer_errors(const Tensor& W, const Tensor& Wq, const Tensor& H) {
  if (Wq.device() != W.device())
    fail("layer_errors", "W {} and Wq {} are on different devices", W.str(), Wq.str());
  // The difference is taken in F64 so tiny errors of near-exact layers are not lost.
  LayerErrors e;
  Tensor W64, D;
  if (!W.is_cpu()) {
    W64 = Tensor::zeros(W.shape(), DType::F64, W.device());
    D = Tensor::zeros(W.shape(), DType::F64, W.device());
    ops::accumulate(W64, W);
    ops::accumulate(D, W);
    ops::accumulate(D, Wq, -1.0);  // 0 + w - q: the same double as the CPU's w - q
    const double wn = ops::norm_stats(W64).sumsq, dn = ops::norm_stats(D).sumsq;
    e.weight = wn > 0 ? std::sqrt(dn / wn) : 0.0;
  } else {
    W64 = W.to(DType::F64);
    D = Tensor::empty(W.shape(), DType::F64);
    const double* w = W64.data<double>();
    const float* q = Wq.data<float>();
    double* d = D.data<double>();
    double num = 0, den = 0;
    for (int64_t i = 0; i < W.numel(); ++i) {
      d[i] = w[i] - q[i];
      num += d[i] * d[i];
      den += w[i] * w[i];
    }
    e.weight = den > 0 ? std::sqrt(num / den) : 0.0;
  }
  const double den = hessian_error(W64, H);
  e.output = den > 0 ? std::sqrt(std::max(0.0, hessian_error(D, H)) / den) : 0.0;
  return e;
}

double relative_output_error(const Tensor& W, const Tensor& Wq, const Tensor& H) {
  return layer_errors(W, Wq, H).output;
}

}  // namespace lrq
