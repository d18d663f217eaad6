// The whole-model training pieces (op_list.h, "whole-model training") on the GPU: not written
// yet. Each is an Error naming the op, so a CUDA build links and a GPU training run stops with
// a clear line instead of a wrong result; the CPU forms in backend/cpu/train_cpu.cpp are the
// reference the kernels will be checked against.
#include <string>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"

namespace lrq::cuda {

double cross_entropy(const Tensor&, std::span<const int32_t>, const Tensor&, double) {
  bad_args("cross_entropy", "not implemented on the GPU yet (CPU only)");
}

void embedding_backward(std::span<const int32_t>, const Tensor&, const Tensor&) {
  bad_args("embedding_backward", "not implemented on the GPU yet (CPU only)");
}

void lords_ste_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&, const Tensor&) {
  bad_args("lords_ste_backward", "not implemented on the GPU yet (CPU only)");
}

}  // namespace lrq::cuda
