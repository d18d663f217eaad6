// What the transformer's forward pieces (transformer_cpu.cpp) share with their backward passes
// (grad_cpu.cpp). A gradient is exact only if the backward sees the numbers the forward used
// (the same 1/rms, the same rotary angles, the same softmax), so each of those is computed in
// one place. F is float or double; the templates are instantiated in transformer_cpu.cpp.
#pragma once
#include <cblas.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/tensor.h"

namespace lrq::cpu {

/// One row-major product by single-threaded BLAS, for loops that run inside a parallel region
/// under SerialBlas (attention and its backward).
inline void gemm_serial(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                        float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
                        float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm_serial(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                        double alpha, const double* A, int64_t lda, const double* B,
                        int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

/// 1 / sqrt(mean(r^2) + eps) for one row of d values, as rmsnorm scales it: the sum of squares
/// in double either way; in F32 the mean is rounded to float before eps is added (what the
/// model has always computed), in F64 nothing is rounded.
template <class F>
inline F rms_inverse(const F* r, int64_t d, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < d; ++i) ss += double(r[i]) * r[i];
  if constexpr (std::is_same_v<F, float>)
    return 1.0f / std::sqrt(float(ss / double(d)) + eps);
  else
    return 1.0 / std::sqrt(ss / double(d) + double(eps));
}

/// A norm weight (F32/F16/BF16, or F64) as d values of F.
template <class F>
std::vector<F> weights_as(const Tensor& w);

/// RoPE in place on x (T x n_heads*hd) at positions pos0..: the rotation by +angle, or with
/// `inverse` by -angle, its transpose (the backward). Both use the same angles: in F32 those
/// of Hugging Face's float32 computation, in F64 the same formula in double.
template <class F>
void rope_rotate(const Tensor& x, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
                 bool interleaved, bool inverse);

/// Causal GQA attention (ops::attention's arguments); when lse is non-null it also receives
/// each query row's log-sum-exp of its scaled scores, lse[h * T + t].
template <class F>
void attention_rows(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                    int64_t hd, int64_t pos0, const Tensor& out, F* lse);

}  // namespace lrq::cpu
