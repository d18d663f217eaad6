// Error measures shared by the tests that compare two implementations (CPU vs CUDA).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "core/tensor.h"

namespace lrq::test {

/// ||got - want||_F / ||want||_F in double (any float dtype, any device); infinity if got holds
/// a NaN or an infinity.
inline double rel_err(const Tensor& got, const Tensor& want) {
  Tensor a = got.to(Device::CPU).to(DType::F64), b = want.to(Device::CPU).to(DType::F64);
  EXPECT_EQ(a.numel(), b.numel());
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.at<double>(i), y = b.at<double>(i);
    if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

/// Prints and checks one error against its budget (a NaN fails too).
inline void within(const std::string& what, double err, double budget) {
  std::printf("[budget] %-52s err %.3e budget %.0e\n", what.c_str(), err, budget);
  EXPECT_LE(err, budget) << what;
}

}  // namespace lrq::test
