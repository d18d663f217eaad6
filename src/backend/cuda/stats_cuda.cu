// GPU side of the F64 reductions (backend/ops.h): accumulate and dot.
#include <algorithm>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"

namespace lrq::cuda {
namespace {

void need(const Tensor& t, DType d, const char* op, const char* what) {
  if (t.dtype() != d)
    bad_args(op, std::string(what) + " must be " + std::string(dtype_name(d)) + ", got " + t.str());
}

template <class T>
__global__ void accumulate_kernel(double* acc, const T* x, double alpha, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    acc[i] += alpha * double(x[i]);
}

}  // namespace

void accumulate(const Tensor& acc, const Tensor& x, double alpha) {
  need(acc, DType::F64, "accumulate", "acc");
  if (acc.numel() != x.numel()) bad_args("accumulate", acc.str() + " += " + x.str());
  const int64_t n = acc.numel();
  if (n == 0) return;
  if (x.dtype() == DType::F32) {
    accumulate_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(acc.data<double>(),
                                                              x.data<float>(), alpha, n);
  } else {
    need(x, DType::F64, "accumulate", "x");
    accumulate_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(acc.data<double>(),
                                                              x.data<double>(), alpha, n);
  }
  LRQ_CUDA_LAUNCHED();
}

double dot(const Tensor& A, const Tensor& B) {
  need(A, DType::F64, "dot", "A");
  need(B, DType::F64, "dot", "B");
  if (A.numel() != B.numel()) bad_args("dot", A.str() + " . " + B.str());
  // cuBLAS takes 32-bit lengths: sum chunks (a 7B down projection has 45M entries, one chunk).
  const int64_t n = A.numel();
  const int64_t chunk = int64_t(1) << 30;
  double total = 0;
  for (int64_t b = 0; b < n; b += chunk) {
    double part = 0;  // host pointer mode: cublasDdot returns once the result is here
    LRQ_CUBLAS_CHECK(cublasDdot(cublas(), int(std::min(chunk, n - b)), A.data<double>() + b, 1,
                                B.data<double>() + b, 1, &part));
    total += part;
  }
  return total;
}

}  // namespace lrq::cuda
