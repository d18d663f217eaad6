// The F64 forms of the GPU's forward pieces (grad_cuda.cu), for the gradient checks: the ops of
// transformer_cuda.cu hand an F64 call here first thing, so their F32 kernels and results stay
// exactly as they were. Arguments as in backend/op_list.h, already checked.
#pragma once
#include "core/tensor.h"

namespace lrq::cuda {

void rmsnorm_f64(const Tensor& x, const Tensor& w, float eps, const Tensor& out);
void rope_f64(const Tensor& x, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
              bool interleaved);
/// Through attention_train's tiled kernel (any pos0, no lse).
void attention_f64(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                   int64_t hd, int64_t pos0, const Tensor& out);
void silu_mul_f64(const Tensor& gate, const Tensor& up, const Tensor& out);
void add_inplace_f64(const Tensor& x, const Tensor& y);

}  // namespace lrq::cuda
