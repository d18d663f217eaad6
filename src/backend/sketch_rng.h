// The counter-based Gaussians of ops::fill_gaussian (sketches) and ops::fill_randn (synthetic
// weights): one definition compiled for the host and for the device, so both backends evaluate
// the same formula and element i is a pure function of (key, i) whatever the launch shape.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LRQ_HOST_DEVICE __host__ __device__
#else
#define LRQ_HOST_DEVICE
#endif

namespace lrq::sketch_rng {

/// Output i of the SplitMix64 stream seeded with `key` (Steele, Lea and Flood 2014): a counter
/// hashed, so any element can be computed on its own.
LRQ_HOST_DEVICE inline uint64_t splitmix64(uint64_t key, uint64_t i) {
  uint64_t z = key + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Elements 2i and 2i+1: Box-Muller on the two 32-bit halves of one hash, in double.
LRQ_HOST_DEVICE inline void gaussian_pair(uint64_t key, uint64_t i, float& x0, float& x1) {
  const uint64_t z = splitmix64(key, i);
  const double u1 = double((z >> 32) + 1) * 0x1p-32;         // (0, 1]: log stays finite
  const double u2 = double(z & 0xffffffffull) * 0x1p-32;     // [0, 1)
  const double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
  x0 = float(r * cos(a));
  x1 = float(r * sin(a));
}

/// Standard normal element i of stream `key` (one Box-Muller value per hash: fill_randn draws
/// elements independently, with no pairing to respect).
LRQ_HOST_DEVICE inline double normal(uint64_t key, uint64_t i) {
  const uint64_t z = splitmix64(key, i);
  const double u1 = double((z >> 32) + 1) * 0x1p-32;
  const double u2 = double(z & 0xffffffffull) * 0x1p-32;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/// Cholesky QR's drop tolerance: a column is dropped when its residual norm after projecting out
/// the kept ones is below tol x its norm. The residual is read off the Gram matrix, whose
/// rounding error is ~eps x the squared norm, so below sqrt(k eps) a residual is noise in F64
/// (one device keeps a dependent column as normalized noise, another drops it); F32 input
/// carries its own rounding of ~2^-24.
inline double cholesky_qr_drop_tol(bool f32) { return f32 ? 64 * 0x1p-24 : 0x1p-20; }

}  // namespace lrq::sketch_rng
