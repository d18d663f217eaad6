// LoRDS kernels on the GPU (placeholder until the fused kernels land).
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_ops.h"

namespace lrq::cuda {

void lords_dequantize(const Lords&, const Tensor&) { bad_args("lords_dequantize", "not yet on the GPU"); }
void lords_matmul(const Lords&, const Tensor&, const Tensor&, bool) {
  bad_args("lords_matmul", "not yet on the GPU");
}
double lords_assign(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                    const Tensor&, const Tensor&) {
  bad_args("lords_assign", "not yet on the GPU");
}
void scale_by_codebook(const Tensor&, const Tensor&, const Tensor&, double) {
  bad_args("scale_by_codebook", "not yet on the GPU");
}
void adam_step(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const AdamParams&) {
  bad_args("adam_step", "not yet on the GPU");
}

}  // namespace lrq::cuda
