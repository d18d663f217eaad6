// Shared helpers for the tests: where ../shared is, skipping cleanly without it, running the CLI.
#pragma once
#include <gtest/gtest.h>

#include "backend/memory.h"
#include "core/tensor.h"

#include <string>

namespace lrq::test {

/// The shared data folder: $LRQ_SHARED, else <repo>/../shared. "" if neither exists.
std::string shared_dir();
/// Path under the shared folder (call only after REQUIRE_SHARED()).
std::string shared(const std::string& rel);
/// Path under the repository.
std::string repo(const std::string& rel);
/// Path under tests/data.
std::string test_data(const std::string& rel);
/// A fresh empty temporary directory, removed at process exit.
std::string temp_dir();

/// F32 N(mean, sd^2) samples from std::mt19937_64(seed), in order: the same values whatever
/// the machine, for tests that need a random matrix.
Tensor randn(Shape s, uint64_t seed, double sd = 1.0, double mean = 0.0);

/// U8 codes uniform in [0, 2^bits), [m, n], from std::mt19937_64(seed).
Tensor random_codes(int64_t m, int64_t n, int bits, uint64_t seed);

struct CliResult {
  int exit_code;
  std::string out, err;
};
/// Runs the lrquant binary (or `binary`) with `args` (a shell-quoted argument string).
CliResult run_cli(const std::string& args, const std::string& binary = "");

}  // namespace lrq::test

#define REQUIRE_SHARED()                                                              \
  do {                                                                                \
    if (::lrq::test::shared_dir().empty())                                            \
      GTEST_SKIP() << "../shared not found (set LRQ_SHARED to its path); skipping";   \
  } while (0)

/// GPU tests skip (not fail) on a machine without a visible CUDA device, so a CPU run of the
/// whole list stays green; CI only compiles them.
#define REQUIRE_GPU()                                                                       \
  do {                                                                                      \
    if (!::lrq::backend::cuda_available()) GTEST_SKIP() << "no CUDA device visible; skipping"; \
  } while (0)
