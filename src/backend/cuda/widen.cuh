// Device-side widening of stored element types to F32, for kernels that read checkpoint
// weights (F32/F16/BF16, F64 for completeness) as they are stored. Include from .cu files only.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "core/tensor.h"

namespace lrq::cuda {

enum class Stored : uint8_t { F32, F64, F16, BF16 };

/// The kernel-side tag for a tensor's dtype; an Error for anything that is not a float type.
inline Stored stored_kind(const Tensor& t, const char* op) {
  switch (t.dtype()) {
    case DType::F32: return Stored::F32;
    case DType::F64: return Stored::F64;
    case DType::F16: return Stored::F16;
    case DType::BF16: return Stored::BF16;
    default: fail_msg("", std::string(op) + ": unsupported dtype of " + t.str());
  }
}

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) {
  return __uint_as_float(uint32_t(h) << 16);  // bf16 is the upper half of an fp32: exact
}
__device__ __forceinline__ float f16_bits_to_f32(uint16_t h) {
  return __half2float(__ushort_as_half(h));
}

/// Element i of p (of kind k) as F32; k is uniform across a launch, so the switch costs little.
__device__ __forceinline__ float load_f32(const void* p, Stored k, int64_t i) {
  switch (k) {
    case Stored::F32: return static_cast<const float*>(p)[i];
    case Stored::F64: return float(static_cast<const double*>(p)[i]);
    case Stored::F16: return f16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: return bf16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
  }
}

}  // namespace lrq::cuda
