// Helpers shared by the benchmarks (header only: every bench_*.cpp is its own executable).
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "backend/ops.h"

namespace lrq::bench {

/// Median wall-clock milliseconds of `op` over `reps` runs after one warm-up (handles, kernel
/// loads, the memory pool), with the GPU stream drained before and after each run, so queued
/// work is charged to the run that queued it. Host work inside `op` counts, unlike event timing.
inline double wall_median_ms(int reps, const std::function<void()>& op) {
  op();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    ops::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    op();
    ops::synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace lrq::bench
