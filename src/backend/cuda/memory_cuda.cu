#include "backend/cuda/cuda_common.h"
#include "backend/memory.h"

namespace lrq::backend {
GpuMemory cuda_memory();
void cuda_reset_peak();
}  // namespace lrq::backend

namespace lrq::cuda {

cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t st;
    LRQ_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    // Tensors are allocated from the device's stream-ordered pool (cuda_alloc below). Keep
    // freed memory in the pool instead of returning it at every synchronization: a forward
    // pass frees and re-allocates the same activation sizes on every token.
    int dev = 0;
    cudaMemPool_t pool;
    LRQ_CUDA_CHECK(cudaGetDevice(&dev));
    LRQ_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
    uint64_t keep = UINT64_MAX;
    LRQ_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    return st;
  }();
  return s;
}

int sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    LRQ_CUDA_CHECK(cudaGetDevice(&dev));
    LRQ_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    return v;
  }();
  return n;
}

cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t c;
    LRQ_CUBLAS_CHECK(cublasCreate(&c));
    LRQ_CUBLAS_CHECK(cublasSetStream(c, stream()));
    return c;
  }();
  return h;
}

cusolverDnHandle_t cusolver() {
  static cusolverDnHandle_t h = [] {
    cusolverDnHandle_t c;
    LRQ_CUSOLVER_CHECK(cusolverDnCreate(&c));
    LRQ_CUSOLVER_CHECK(cusolverDnSetStream(c, stream()));
    return c;
  }();
  return h;
}

DeviceScratch::DeviceScratch(size_t bytes) {
  cudaError_t e = cudaMallocAsync(&p_, bytes ? bytes : 1, stream());
  if (e != cudaSuccess)
    fail_msg("cuda", "cannot allocate " + std::to_string(bytes) + " bytes of GPU scratch: " +
                         cudaGetErrorString(e));
}

DeviceScratch::~DeviceScratch() { cudaFreeAsync(p_, stream()); }

int read_info(const int* dev_info) {
  int info = 0;
  LRQ_CUDA_CHECK(cudaMemcpyAsync(&info, dev_info, sizeof(int), cudaMemcpyDeviceToHost, stream()));
  LRQ_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return info;
}

}  // namespace lrq::cuda

namespace lrq::backend {

// Stream-ordered: every kernel that touches a tensor runs on our one stream, so allocation and
// release in stream order are safe, need no device-wide synchronization (cudaFree has one), and
// can be captured into a CUDA graph.
void* cuda_alloc(size_t bytes) {
  void* p = nullptr;
  cudaError_t e = cudaMallocAsync(&p, bytes, lrq::cuda::stream());
  if (e != cudaSuccess)
    fail_msg("cuda", "cannot allocate " + std::to_string(bytes) +
                         " bytes on the GPU: " + cudaGetErrorString(e));
  return p;
}

void cuda_free(void* p) { cudaFreeAsync(p, lrq::cuda::stream()); }

void cuda_copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  cudaMemcpyKind kind = dd == Device::CUDA ? (sd == Device::CUDA ? cudaMemcpyDeviceToDevice
                                                                  : cudaMemcpyHostToDevice)
                                           : cudaMemcpyDeviceToHost;
  LRQ_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, lrq::cuda::stream()));
  // A device-to-device copy is ordered with the kernels around it (the KV-cache append on
  // every layer); only copies that involve host memory wait.
  if (kind != cudaMemcpyDeviceToDevice) LRQ_CUDA_CHECK(cudaStreamSynchronize(lrq::cuda::stream()));
}

void cuda_memset0(void* p, size_t bytes) {
  LRQ_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, lrq::cuda::stream()));
}

bool cuda_device_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

namespace {
cudaMemPool_t pool_of_stream() {
  (void)lrq::cuda::stream();  // the pool's release threshold is set up with the stream
  int dev = 0;
  cudaMemPool_t pool;
  LRQ_CUDA_CHECK(cudaGetDevice(&dev));
  LRQ_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
  return pool;
}
}  // namespace

GpuMemory cuda_memory() {
  cudaMemPool_t pool = pool_of_stream();
  // The pool's counters are updated as the stream runs; wait so they include queued frees.
  LRQ_CUDA_CHECK(cudaStreamSynchronize(lrq::cuda::stream()));
  GpuMemory m;
  uint64_t v = 0;
  LRQ_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &v));
  m.peak_used = size_t(v);
  LRQ_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &v));
  m.used = size_t(v);
  LRQ_CUDA_CHECK(cudaMemGetInfo(&m.free, &m.total));
  return m;
}

void cuda_reset_peak() {
  cudaMemPool_t pool = pool_of_stream();
  LRQ_CUDA_CHECK(cudaStreamSynchronize(lrq::cuda::stream()));
  uint64_t zero = 0;  // the only value the attribute accepts: resets to the current use
  LRQ_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));
}

}  // namespace lrq::backend
