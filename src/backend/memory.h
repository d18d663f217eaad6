// Device memory: the lowest layer of the backend seam. The CPU side is aligned malloc; the
// CUDA side lives in backend/cuda and is only linked when LRQ_WITH_CUDA.
#pragma once
#include <cstddef>

#include "core/tensor.h"

namespace lrq::backend {

void* device_alloc(Device d, size_t bytes);
void device_free(Device d, void* p);
/// memcpy between any two devices (synchronous).
void device_copy(void* dst, Device dd, const void* src, Device sd, size_t bytes);
void device_memset0(void* p, Device d, size_t bytes);
/// True when this build has a CUDA backend and a GPU is visible.
bool cuda_available();

/// GPU memory as the allocator and the driver see it (all zero without a usable GPU).
struct GpuMemory {
  size_t peak_used = 0;  // high-water mark of bytes handed out by our stream-ordered pool
  size_t used = 0;       // bytes handed out now
  size_t free = 0, total = 0;  // cudaMemGetInfo: the whole device, other processes included
};
GpuMemory gpu_memory();
/// Restarts the pool's high-water mark at the bytes in use now.
void reset_gpu_peak();

}  // namespace lrq::backend
