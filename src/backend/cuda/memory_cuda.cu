#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

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


// One worker, a ring of pinned chunks and a copy stream of its own. Uploads reuse a chunk only
// after its previous copy left it (its event), so staging (host memcpy) and the DMA overlap;
// a download waits for each chunk's DMA before copying it out.
struct CopyQueue::Impl {
  static constexpr size_t kChunk = size_t(16) << 20;
  static constexpr int kSlots = 4;
  struct Job {
    char* dst = nullptr;
    const char* src = nullptr;
    size_t bytes = 0;
    bool upload = true;
    std::shared_ptr<const void> keep;
  };

  int device = 0;
  cudaStream_t copy = nullptr;
  cudaEvent_t queued = nullptr, uploaded = nullptr, done = nullptr;
  std::array<void*, kSlots> pinned{};
  std::array<cudaEvent_t, kSlots> free_at{};
  unsigned next = 0;

  std::mutex m;
  std::condition_variable wake, idle;
  std::deque<Job> queue;
  int64_t uploads_pending = 0;
  bool busy = false, stop = false;
  std::exception_ptr error;
  std::thread worker;

  void run_job(const Job& j) {
    for (size_t off = 0; off < j.bytes; off += kChunk) {
      const size_t n = std::min(kChunk, j.bytes - off);
      const unsigned s = next++ % kSlots;
      LRQ_CUDA_CHECK(cudaEventSynchronize(free_at[s]));
      if (j.upload) {
        std::memcpy(pinned[s], j.src + off, n);
        LRQ_CUDA_CHECK(cudaMemcpyAsync(j.dst + off, pinned[s], n, cudaMemcpyHostToDevice, copy));
        LRQ_CUDA_CHECK(cudaEventRecord(free_at[s], copy));
      } else {
        LRQ_CUDA_CHECK(cudaMemcpyAsync(pinned[s], j.src + off, n, cudaMemcpyDeviceToHost, copy));
        LRQ_CUDA_CHECK(cudaEventRecord(free_at[s], copy));
        LRQ_CUDA_CHECK(cudaEventSynchronize(free_at[s]));
        std::memcpy(j.dst + off, pinned[s], n);
      }
    }
    if (j.upload) LRQ_CUDA_CHECK(cudaEventRecord(uploaded, copy));
  }

  void run() {
    try {
      LRQ_CUDA_CHECK(cudaSetDevice(device));
    } catch (...) {
      std::lock_guard<std::mutex> lk(m);
      error = std::current_exception();
    }
    for (;;) {
      Job j;
      bool skip;
      {
        std::unique_lock<std::mutex> lk(m);
        wake.wait(lk, [&] { return stop || !queue.empty(); });
        if (queue.empty()) return;
        j = std::move(queue.front());
        queue.pop_front();
        busy = true;
        skip = bool(error);  // after a failure the tensors are lost anyway: drain the queue
      }
      std::exception_ptr e;
      if (!skip) try {
          run_job(j);
        } catch (...) {
          e = std::current_exception();
        }
      j.keep.reset();  // a device source is freed in the compute stream's order, after its copy
      {
        std::lock_guard<std::mutex> lk(m);
        if (e && !error) error = e;
        if (j.upload) --uploads_pending;
        busy = false;
      }
      idle.notify_all();
    }
  }

  // The host side of a fence: waits for `ready`, then hands back a stored error.
  template <class Ready>
  std::exception_ptr wait(Ready ready) {
    std::unique_lock<std::mutex> lk(m);
    idle.wait(lk, ready);
    return std::exchange(error, nullptr);
  }
};

CopyQueue::CopyQueue() : impl_(std::make_unique<Impl>()) {
  Impl& q = *impl_;
  (void)lrq::cuda::stream();  // the compute stream (and its pool) exist before the copies
  LRQ_CUDA_CHECK(cudaGetDevice(&q.device));
  LRQ_CUDA_CHECK(cudaStreamCreateWithFlags(&q.copy, cudaStreamNonBlocking));
  for (cudaEvent_t* e : {&q.queued, &q.uploaded, &q.done})
    LRQ_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
  for (int s = 0; s < Impl::kSlots; ++s) {
    LRQ_CUDA_CHECK(cudaHostAlloc(&q.pinned[size_t(s)], Impl::kChunk, cudaHostAllocDefault));
    LRQ_CUDA_CHECK(cudaEventCreateWithFlags(&q.free_at[size_t(s)], cudaEventDisableTiming));
  }
  q.worker = std::thread([&q] { q.run(); });
}

CopyQueue::~CopyQueue() {
  if (!impl_) return;
  Impl& q = *impl_;
  try {
    fence();
  } catch (...) {
    // The caller is unwinding from an earlier error or dropped this one; the tensors are lost.
  }
  {
    std::lock_guard<std::mutex> lk(q.m);
    q.stop = true;
  }
  q.wake.notify_all();
  if (q.worker.joinable()) q.worker.join();
  cudaStreamSynchronize(q.copy);
  for (int s = 0; s < Impl::kSlots; ++s) {
    if (q.pinned[size_t(s)]) cudaFreeHost(q.pinned[size_t(s)]);
    if (q.free_at[size_t(s)]) cudaEventDestroy(q.free_at[size_t(s)]);
  }
  for (cudaEvent_t e : {q.queued, q.uploaded, q.done}) cudaEventDestroy(e);
  cudaStreamDestroy(q.copy);
}

void CopyQueue::enqueue(void* dst, Device dd, const void* src, Device sd, size_t bytes,
                        std::shared_ptr<const void> keepalive) {
  if (bytes == 0) return;
  if ((dd == Device::CPU) == (sd == Device::CPU))
    fail_msg("", "CopyQueue: a copy between the host and the GPU expected");
  Impl& q = *impl_;
  // An upload's destination came from the compute stream's pool and a download's source is
  // written by kernels queued there: the copy starts once that stream has reached this point.
  LRQ_CUDA_CHECK(cudaEventRecord(q.queued, lrq::cuda::stream()));
  LRQ_CUDA_CHECK(cudaStreamWaitEvent(q.copy, q.queued, 0));
  const bool up = dd != Device::CPU;
  {
    std::lock_guard<std::mutex> lk(q.m);
    q.queue.push_back({static_cast<char*>(dst), static_cast<const char*>(src), bytes, up,
                       std::move(keepalive)});
    if (up) ++q.uploads_pending;
  }
  q.wake.notify_one();
}

void CopyQueue::fence_uploads() {
  Impl& q = *impl_;
  const std::exception_ptr e = q.wait([&] { return q.uploads_pending == 0; });
  // Even after a failure: copies already on the stream must finish before their destinations
  // can be freed in the compute stream's order.
  LRQ_CUDA_CHECK(cudaStreamWaitEvent(lrq::cuda::stream(), q.uploaded, 0));
  if (e) std::rethrow_exception(e);
}

void CopyQueue::fence() {
  Impl& q = *impl_;
  const std::exception_ptr e = q.wait([&] { return q.queue.empty() && !q.busy; });
  LRQ_CUDA_CHECK(cudaEventRecord(q.done, q.copy));
  LRQ_CUDA_CHECK(cudaStreamWaitEvent(lrq::cuda::stream(), q.done, 0));
  if (e) std::rethrow_exception(e);
}

}  // namespace lrq::backend
