// Shared CUDA plumbing: error checks that become lrq::Error, the per-process cuBLAS/cuSOLVER
// handles and the stream every lrquant kernel runs on.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include "core/error.h"

namespace lrq::cuda {

#define LRQ_CUDA_CHECK(expr)                                                                \
  do {                                                                                      \
    cudaError_t _e = (expr);                                                                \
    if (_e != cudaSuccess)                                                                  \
      ::lrq::fail_msg("cuda", std::string(#expr) + " failed: " + cudaGetErrorString(_e));   \
  } while (0)
#define LRQ_CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                          \
    cublasStatus_t _s = (expr);                                                                 \
    if (_s != CUBLAS_STATUS_SUCCESS)                                                            \
      ::lrq::fail_msg("cublas", std::string(#expr) + " failed: status " + std::to_string(int(_s))); \
  } while (0)
#define LRQ_CUSOLVER_CHECK(expr)                                                                  \
  do {                                                                                            \
    cusolverStatus_t _s = (expr);                                                                 \
    if (_s != CUSOLVER_STATUS_SUCCESS)                                                            \
      ::lrq::fail_msg("cusolver", std::string(#expr) + " failed: status " + std::to_string(int(_s))); \
  } while (0)

/// The stream all lrquant work is queued on (one per process for now).
cudaStream_t stream();
cublasHandle_t cublas();
cusolverDnHandle_t cusolver();

}  // namespace lrq::cuda
