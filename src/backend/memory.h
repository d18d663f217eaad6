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

}  // namespace lrq::backend
