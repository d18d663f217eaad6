// A counter-based normal generator shared by the CPU and CUDA fills (ops::fill_randn): sample i
// is a pure function of (seed, i), so any device and any launch shape produce the same tensor.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LRQ_HOST_DEVICE __host__ __device__
#else
#define LRQ_HOST_DEVICE
#endif

namespace lrq::rng {

/// SplitMix64's finalizer: a bijection of 64-bit words that scrambles every input bit.
LRQ_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Standard normal sample i of stream `seed` (Box-Muller on two 32-bit uniforms, the first
/// shifted off zero so the logarithm stays finite).
LRQ_HOST_DEVICE inline double normal(uint64_t seed, uint64_t i) {
  const uint64_t r = mix64(mix64(seed) ^ (i * 0xD1B54A32D192ED03ull));
  const double u1 = (double(r >> 32) + 0.5) * 0x1p-32;
  const double u2 = double(r & 0xffffffffull) * 0x1p-32;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

}  // namespace lrq::rng
