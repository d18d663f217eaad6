#include <cstdlib>
#include <cstring>

#include "backend/memory.h"

namespace lrq::backend {

#if defined(LRQ_WITH_CUDA)
// Implemented in backend/cuda/memory_cuda.cu.
void* cuda_alloc(size_t bytes);
void cuda_free(void* p);
void cuda_copy(void* dst, Device dd, const void* src, Device sd, size_t bytes);
void cuda_memset0(void* p, size_t bytes);
bool cuda_device_present();
GpuMemory cuda_memory();
void cuda_reset_peak();
#endif

#if !defined(LRQ_WITH_CUDA)
[[noreturn]] static void no_cuda() {
  fail("", "this build of lrquant has no CUDA backend (configure with -DLRQ_CUDA=ON on a machine with nvcc)");
}
#endif

void* device_alloc(Device d, size_t bytes) {
  if (d == Device::CPU) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) fail("", "out of host memory allocating {} bytes", bytes);
    return p;
  }
#if defined(LRQ_WITH_CUDA)
  return cuda_alloc(bytes);
#else
  no_cuda();
#endif
}

void device_free(Device d, void* p) {
  if (d == Device::CPU) {
    std::free(p);
    return;
  }
#if defined(LRQ_WITH_CUDA)
  cuda_free(p);
#endif
}

void device_copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (bytes == 0) return;
  if (dd == Device::CPU && sd == Device::CPU) {
    std::memmove(dst, src, bytes);
    return;
  }
#if defined(LRQ_WITH_CUDA)
  cuda_copy(dst, dd, src, sd, bytes);
#else
  no_cuda();
#endif
}

void device_memset0(void* p, Device d, size_t bytes) {
  if (d == Device::CPU) {
    std::memset(p, 0, bytes);
    return;
  }
#if defined(LRQ_WITH_CUDA)
  cuda_memset0(p, bytes);
#else
  no_cuda();
#endif
}

bool cuda_available() {
#if defined(LRQ_WITH_CUDA)
  return cuda_device_present();
#else
  return false;
#endif
}

GpuMemory gpu_memory() {
#if defined(LRQ_WITH_CUDA)
  if (cuda_device_present()) return cuda_memory();
#endif
  return {};
}

namespace {
thread_local CopyQueue* g_capturing = nullptr;
}

CopyQueue::Capture::Capture(CopyQueue& q) : prev_(g_capturing) { g_capturing = &q; }
CopyQueue::Capture::~Capture() { g_capturing = prev_; }
CopyQueue* CopyQueue::capturing() { return g_capturing; }

#if !defined(LRQ_WITH_CUDA)
// Without CUDA no tensor lives on the GPU, so nothing is ever queued.
struct CopyQueue::Impl {};
CopyQueue::CopyQueue() = default;
CopyQueue::~CopyQueue() = default;
void CopyQueue::fence_uploads() {}
void CopyQueue::fence() {}
void CopyQueue::enqueue(void*, Device, const void*, Device, size_t, std::shared_ptr<const void>) {
  no_cuda();
}
#endif

void reset_gpu_peak() {
#if defined(LRQ_WITH_CUDA)
  if (cuda_device_present()) cuda_reset_peak();
#endif
}

}  // namespace lrq::backend
