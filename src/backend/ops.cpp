// Device dispatch for backend/ops.h: the only place that knows both backends exist. Every op of
// backend/op_list.h is defined here by one expansion: the device check, the shared argument
// check (backend/checks.h), then the CPU or the CUDA implementation.
#include "backend/ops.h"

#include "backend/checks.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/memory.h"
#if defined(LRQ_WITH_CUDA)
#include "backend/cuda/cuda_ops.h"
#endif

namespace lrq::ops {

namespace {

Device common_device(std::initializer_list<const Tensor*> ts, const char* op) {
  Device d = (*ts.begin())->device();
  for (const Tensor* t : ts)
    if (t->defined() && t->device() != d)
      fail("", "{}: tensors on different devices ({} and {})", op, device_name(d),
           device_name(t->device()));
  return d;
}

}  // namespace

#define LRQ_UNPAREN(...) __VA_ARGS__
#if defined(LRQ_WITH_CUDA)
#define LRQ_ON_GPU(name, args) return cuda::name args;
#else
#define LRQ_ON_GPU(name, args) fail("", "{}: this build has no CUDA backend", #name);
#endif
#define LRQ_OP(name, ret, params, args, devices)                                 \
  ret name params {                                                              \
    const Device dev = common_device({LRQ_UNPAREN devices}, #name);              \
    checks::name args;                                                           \
    if (dev == Device::CPU) return cpu::name args;                               \
    LRQ_ON_GPU(name, args)                                                       \
  }
#include "backend/op_list.h"
#undef LRQ_ON_GPU
#undef LRQ_UNPAREN

int set_num_threads(int n) { return cpu::set_num_threads(n); }

void packed_force_scalar(bool on) { cpu::packed_force_scalar(on); }
bool packed_simd_active() { return cpu::packed_simd_active(); }

#if defined(LRQ_WITH_CUDA)
bool set_allow_tf32(bool allow) { return cuda::set_allow_tf32(allow); }
bool set_bf16_matmul(bool on) { return cuda::set_bf16_matmul(on); }
bool set_exact_kernels(bool on) { return cuda::set_exact_kernels(on); }
#else
bool set_allow_tf32(bool) { return false; }
bool set_bf16_matmul(bool) { return false; }
bool set_exact_kernels(bool) { return false; }
#endif

void synchronize() {
#if defined(LRQ_WITH_CUDA)
  if (backend::cuda_available()) cuda::synchronize();
#endif
}

}  // namespace lrq::ops
