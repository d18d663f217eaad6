// Fast Walsh-Hadamard transform on the CPU: in place, normalized by 1/sqrt(block), blockwise.
#include <cmath>

#include "backend/cpu/cpu_ops.h"

namespace lrq::cpu {
namespace {

template <class T>
void fwht_block(T* v, int64_t b) {
  for (int64_t h = 1; h < b; h <<= 1)
    for (int64_t i = 0; i < b; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        T a = v[j], c = v[j + h];
        v[j] = a + c;
        v[j + h] = a - c;
      }
  const T s = T(1) / std::sqrt(T(b));
  for (int64_t j = 0; j < b; ++j) v[j] *= s;
}

template <class T>
void fwht_impl(const Tensor& X, int64_t block, int64_t skip) {
  const int64_t n = X.dim(-1), rows = X.numel() / n, nb = n / block;
  T* p = X.data<T>();
#pragma omp parallel for schedule(static) if (rows * n > 32768)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = skip; b < nb; ++b) fwht_block(p + r * n + b * block, block);
}

}  // namespace

void fwht_rows(const Tensor& X, int64_t block, int64_t skip) {
  if (X.dtype() == DType::F32)
    fwht_impl<float>(X, block, skip);
  else
    fwht_impl<double>(X, block, skip);
}

}  // namespace lrq::cpu
