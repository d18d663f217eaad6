// CPU side of the F64 reductions (backend/ops.h): accumulate and dot.
#include "backend/cpu/cpu_ops.h"

namespace lrq::cpu {

namespace {
void need(const Tensor& t, DType d, const char* op, const char* what) {
  if (t.dtype() != d)
    fail("", "{}: {} must be {}, got {}", op, what, dtype_name(d), t.str());
}
}  // namespace

void accumulate(const Tensor& acc, const Tensor& x, double alpha) {
  need(acc, DType::F64, "accumulate", "acc");
  if (acc.numel() != x.numel()) fail("", "accumulate: {} += {}", acc.str(), x.str());
  double* a = acc.data<double>();
  const int64_t n = acc.numel();
  if (x.dtype() == DType::F32) {
    const float* p = x.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] += alpha * double(p[i]);
  } else {
    need(x, DType::F64, "accumulate", "x");
    const double* p = x.data<double>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] += alpha * p[i];
  }
}

double dot(const Tensor& A, const Tensor& B) {
  need(A, DType::F64, "dot", "A");
  need(B, DType::F64, "dot", "B");
  if (A.numel() != B.numel()) fail("", "dot: {} . {}", A.str(), B.str());
  // One sequential sum: the same value as the plain loop it replaced in hessian_error.
  const double* a = A.data<double>();
  const double* b = B.data<double>();
  double s = 0;
  for (int64_t i = 0; i < A.numel(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace lrq::cpu
