// GPU versions of RTN and GPTQ (quant/cuda/quant_cuda.cu). quant/kernels/rtn_grid.cpp and
// gptq_solver.cpp validate their inputs and dispatch here when W lives on the GPU; the
// algorithms, grids and column orders are the ones rtn_grid.h and gptq_solver.h describe, so
// results match the CPU up to float summation order.
// Built only with LRQ_WITH_CUDA.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "quant/kernels/gptq_solver.h"
#include "formats/packed_weight.h"
#include "quant/kernels/rtn_grid.h"

namespace lrq::quant_cuda {

/// diag(H) of a CUDA F32/F64 [n, n] matrix, copied to the host (n values, not the matrix).
std::vector<double> diagonal(const Tensor& H);

/// U (CUDA F32 [n, n], upper, zero below) with A^-1 = U^T U for A = H[perm][:, perm] whose
/// diagonal is replaced by diag[perm[i]] + add. One F64 Cholesky of the reversed A plus one
/// triangular solve. False if A is not positive definite (U untouched).
bool inverse_cholesky_upper(const Tensor& H, const std::vector<int32_t>& perm,
                            const std::vector<double>& diag, double add, Tensor* U);

/// RTN of W (CUDA F32 [rows, cols], validated) with group g and importance imp (cols values,
/// host). The result is packed on the GPU (a PackedWeight whose tensors live there).
PackedWeight rtn(const Tensor& W, const RtnOptions& opt, int64_t g, const std::vector<float>& imp);

/// GPTQ of W (CUDA F32 [rows, n], validated) with the factor f of its H (f.U on the GPU) and
/// group g. The result is packed on the GPU (a PackedWeight whose tensors live there).
GptqResult gptq(const Tensor& W, const GptqFactor& f, const GptqOptions& opt, int64_t g);

}  // namespace lrq::quant_cuda
