// The objective every method and the report compare by: the output error of a quantized
// weight under the calibration inputs' second moment H.
#pragma once
#include "core/tensor.h"

namespace lrq {

/// tr(D H D^T) for D (out x in, F32 or F64) and H (F64 in x in): T times the squared output
/// error ||D X||^2 of inputs with second moment H. The one objective every method compares by.
/// Both on the CPU or both on the GPU (one F64 GEMM and a dot there).
double hessian_error(const Tensor& D, const Tensor& H);
/// A - B elementwise (F32, same shape, one device).
Tensor difference(const Tensor& A, const Tensor& B);

/// Relative output error sqrt(tr(D H D^T) / tr(W H W^T)) with D = W - Wq: ||D X|| / ||W X||
/// on the calibration inputs whose second moment is H (F64). W, Wq and H on one device.
double relative_output_error(const Tensor& W, const Tensor& Wq, const Tensor& H);
struct LayerErrors {
  double weight = 0;  ///< ||W - Wq||_F / ||W||_F
  double output = 0;  ///< relative_output_error
};
/// Both errors of a quantized layer from one F64 difference, on W's device (Wq there too).
LayerErrors layer_errors(const Tensor& W, const Tensor& Wq, const Tensor& H);

}  // namespace lrq
