// Device memory: the lowest layer of the backend seam. The CPU side is aligned malloc; the
// CUDA side lives in backend/cuda and is only linked when LRQ_WITH_CUDA.
#pragma once
#include <cstddef>
#include <memory>

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

/// Copies between the host and the GPU that overlap with the GPU's work, for streaming a model
/// through the GPU one block at a time (synchronous copies from and to pageable memory ran at
/// ~2 GB/s and stalled the stream for the whole transfer). While a Capture is alive on this
/// thread, Tensor::to() between the host and the GPU allocates as usual but queues the bytes:
/// a worker thread stages them through pinned buffers and a copy stream of its own. A queued
/// copy starts after the GPU work queued before it. Uploaded tensors may be read on the GPU
/// only after fence_uploads() (or fence()), downloaded ones on the host only after fence().
/// Sources stay alive until their bytes are copied. Without a GPU nothing is ever queued.
/// Code run under a Capture must not read what it moved (Linear::to implementations only
/// copy; a to(CPU) whose result is read at once must run outside the capture).
class CopyQueue {
 public:
  CopyQueue();
  ~CopyQueue();  // fence(), then stops the worker; an error there is dropped
  CopyQueue(const CopyQueue&) = delete;
  CopyQueue& operator=(const CopyQueue&) = delete;

  /// The GPU's stream waits for every upload queued so far; the host waits only until the
  /// worker has handed their last bytes to the copy engine (downloads queued after them may
  /// still be running). Rethrows a copy's error.
  void fence_uploads();
  /// Everything queued so far is done: downloads are on the host, and the GPU's stream waits
  /// for the uploads. Rethrows a copy's error.
  void fence();
  /// Queues one copy (Tensor::to calls this while capturing); one of the devices is the GPU.
  void enqueue(void* dst, Device dd, const void* src, Device sd, size_t bytes,
               std::shared_ptr<const void> keepalive);

  class Capture {
   public:
    explicit Capture(CopyQueue& q);
    ~Capture();
    Capture(const Capture&) = delete;
    Capture& operator=(const Capture&) = delete;

   private:
    CopyQueue* prev_;
  };
  /// The queue of this thread's innermost live Capture, or null.
  static CopyQueue* capturing();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace lrq::backend
