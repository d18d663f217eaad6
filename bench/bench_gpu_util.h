// GPU timing helpers shared by the CUDA benchmarks (header only; CUDA builds only).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "backend/cuda/cuda_common.h"
#include "backend/memory.h"
#include "core/tensor.h"

namespace lrq::bench {

/// The device's L2 in bytes (set from the device in main()).
inline double g_l2_bytes = 50e6;

inline Tensor randn(Shape s, uint64_t seed, float sd = 1.f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  Tensor x = Tensor::empty(std::move(s));
  for (int64_t i = 0; i < x.numel(); ++i) x.at<float>(i) = d(g);
  return x;
}

// Median milliseconds per call: `calls` invocations of op(i) captured into one CUDA graph,
// replayed `reps` times after two warm-up replays.
inline double per_call_ms(int calls, int reps, const std::function<void(int)>& op) {
  cudaStream_t s = cuda::stream();
  op(0);  // first use outside the capture: handles, statics, pool
  LRQ_CUDA_CHECK(cudaStreamSynchronize(s));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  LRQ_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  try {
    for (int i = 0; i < calls; ++i) op(i);
  } catch (...) {
    // Leave the stream usable for the next measurement.
    if (cudaStreamEndCapture(s, &graph) == cudaSuccess) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  LRQ_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  LRQ_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t a, b;
  LRQ_CUDA_CHECK(cudaEventCreate(&a));
  LRQ_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 2; ++i) LRQ_CUDA_CHECK(cudaGraphLaunch(exec, s));
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    LRQ_CUDA_CHECK(cudaEventRecord(a, s));
    LRQ_CUDA_CHECK(cudaGraphLaunch(exec, s));
    LRQ_CUDA_CHECK(cudaEventRecord(b, s));
    LRQ_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    LRQ_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(double(t) / calls);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Device-to-device copy of 1 GiB: bytes read + written per second.
inline double copy_gbps() {
  const size_t n = size_t(1) << 30;
  Tensor a = Tensor::empty({int64_t(n)}, DType::U8, Device::CUDA);
  Tensor b = Tensor::empty({int64_t(n)}, DType::U8, Device::CUDA);
  const double ms = per_call_ms(4, 10, [&](int) {
    LRQ_CUDA_CHECK(cudaMemcpyAsync(b.raw(), a.raw(), n, cudaMemcpyDeviceToDevice, cuda::stream()));
  });
  return 2.0 * double(n) / (ms * 1e-3) / 1e9;
}

// Weight copies to cycle through so that one pass reads at least 4x the L2 from DRAM.
inline int copies_for(double bytes) { return int(std::clamp(4.0 * g_l2_bytes / bytes, 2.0, 400.0)) + 1; }

/// Median ms of cuBLAS's batch-1 product with F16 weights (W's values rounded), F16 x, F32 y and
/// F32 compute: the decode baseline. Weight copies cycled so every call reads DRAM.
inline double cublas_f16_gemv_ms(const Tensor& W, int reps) {
  const int64_t out = W.dim(0), in = W.dim(1);
  const Tensor W16 = W.to(DType::F16);
  const int n = copies_for(double(W16.nbytes()) + 2.0 * double(in) + 4.0 * double(out));
  std::vector<Tensor> Ws;
  for (int i = 0; i < n; ++i) Ws.push_back(W16.to(Device::CUDA));
  const Tensor x16 = randn({1, in}, 4).to(DType::F16).to(Device::CUDA);
  Tensor y = Tensor::empty({1, out}, DType::F32, Device::CUDA);
  const float one = 1.f, zero = 0.f;
  return per_call_ms(n, reps, [&](int i) {
    LRQ_CUBLAS_CHECK(cublasGemmEx(cuda::cublas(), CUBLAS_OP_T, CUBLAS_OP_N, int(out), 1, int(in),
                                  &one, Ws[size_t(i % n)].raw(), CUDA_R_16F, int(in), x16.raw(),
                                  CUDA_R_16F, int(in), &zero, y.raw(), CUDA_R_32F, int(out),
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
}

/// The frame of a GPU benchmark's main: a line and exit 0 without a visible GPU, the device's
/// name and L2 (into g_l2_bytes) read, `body` run, and any error a one-line message and exit 1.
inline int run_gpu_bench(const char* name, const std::function<void(const cudaDeviceProp&)>& body) {
  if (!backend::cuda_available()) {
    std::printf("no CUDA device visible\n");
    return 0;
  }
  try {
    cudaDeviceProp prop;
    LRQ_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    g_l2_bytes = double(prop.l2CacheSize);
    body(prop);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
  return 0;
}

}  // namespace lrq::bench
