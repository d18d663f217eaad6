// Shared CUDA plumbing: error checks that become lrq::Error, the per-process cuBLAS/cuSOLVER
// handles and the stream every lrquant kernel runs on.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <climits>
#include <string>
#include <utility>

#include "core/error.h"

namespace lrq::cuda {

#define LRQ_CUDA_CHECK(expr)                                                                \
  do {                                                                                      \
    cudaError_t _e = (expr);                                                                \
    if (_e != cudaSuccess) {                                                                \
      /* consumed: a caught error must not resurface in the next, unrelated check */         \
      (void)cudaGetLastError();                                                             \
      ::lrq::fail_msg("cuda", std::string(#expr) + " failed: " + cudaGetErrorString(_e));   \
    }                                                                                       \
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

/// Checks the launch that was just queued (bad configuration, missing kernel image).
#define LRQ_CUDA_LAUNCHED() LRQ_CUDA_CHECK(cudaGetLastError())

/// The stream all lrquant work is queued on (one per process for now).
cudaStream_t stream();
/// Multiprocessors of the current device (read once).
int sm_count();
cublasHandle_t cublas();
cusolverDnHandle_t cusolver();

/// Stream-ordered scratch memory on the GPU, freed (also stream-ordered) when it goes out of
/// scope. The stream's memory pool makes this cheap enough for per-call workspaces.
class DeviceScratch {
 public:
  explicit DeviceScratch(size_t bytes);
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
};

// A device word set to "none" (all ones) for an atomicMin report, and its value read back.
class FirstReport {
 public:
  FirstReport() : word_(sizeof(unsigned long long)) {
    LRQ_CUDA_CHECK(cudaMemsetAsync(ptr(), 0xFF, sizeof(unsigned long long), stream()));
  }
  unsigned long long* ptr() const { return word_.as<unsigned long long>(); }
  // Waits for the stream; false when nothing was reported.
  bool read(unsigned long long* v) const {
    LRQ_CUDA_CHECK(cudaMemcpyAsync(v, ptr(), sizeof *v, cudaMemcpyDeviceToHost, stream()));
    LRQ_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return *v != ~0ull;
  }

 private:
  DeviceScratch word_;
};

/// Waits for the stream and returns a cuSOLVER status word (devInfo) from device memory.
int read_info(const int* dev_info);

/// Throws the one-line argument error "<op>: <what>".
[[noreturn]] inline void bad_args(const char* op, const std::string& what) {
  fail_msg("", std::string(op) + ": " + what);
}

/// A size for cuBLAS/cuSOLVER's 32-bit interfaces; an Error when it does not fit.
inline int blas_int(int64_t v, const char* op) {
  if (v > INT_MAX) bad_args(op, "size " + std::to_string(v) + " exceeds the 32-bit limit of cuBLAS/cuSOLVER");
  return int(v);
}

/// Blocks of `threads` covering n items, capped so a grid-stride loop finishes the rest.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));
}

#if defined(__CUDACC__)
// Programmatic dependent launch (sm_90): a kernel launched with programmatic stream
// serialization may start once every CTA of the kernel before it has called
// pdl_release_dependents(); it must call pdl_wait() before reading what that kernel writes.
// Both are no-ops when the launch was ordinary.
__device__ __forceinline__ void pdl_release_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/// The most shared memory (static + dynamic) one CTA may use on this device, with the opt-in.
inline size_t smem_optin_limit() {
  static const size_t limit = [] {
    int dev = 0, v = 0;
    LRQ_CUDA_CHECK(cudaGetDevice(&dev));
    LRQ_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return size_t(v);
  }();
  return limit;
}
/// Lets `kernel` launch with up to `bytes` of dynamic shared memory (above 48 KB needs the
/// opt-in). Callers grant it once per kernel (a static).
template <class... Params>
void allow_smem(void (*kernel)(Params...), size_t bytes) {
  LRQ_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}
/// Grants `kernel` every byte of dynamic shared memory the device allows beside its static
/// shared memory. For kernels whose need varies per launch: without the opt-in the limit is
/// 48 KB for static and dynamic together, so a dynamic size just under 48 KB beside a static
/// array fails to launch ("invalid argument").
template <class... Params>
void allow_all_smem(void (*kernel)(Params...)) {
  cudaFuncAttributes a = {};
  LRQ_CUDA_CHECK(cudaFuncGetAttributes(&a, kernel));
  allow_smem(kernel, smem_optin_limit() - a.sharedSizeBytes);
}

/// Launches kernel<<<grid, block, smem>>> on stream(), with programmatic stream serialization
/// when `pdl` (the kernel may then start before the one before it ends; see above).
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), unsigned grid, unsigned block, size_t smem, bool pdl,
                   Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(block);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream();
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  LRQ_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}
#endif

/// dst (cols x rows) = src (rows x cols)^T, both row-major on the GPU, queued on stream(): the
/// one tiled transpose (matrix_cuda.cu), for ops::transpose and the solvers' layout changes.
/// Defined for float and double.
template <class T>
void transpose_device(const T* src, T* dst, int64_t rows, int64_t cols);

}  // namespace lrq::cuda
