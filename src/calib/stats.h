// Input statistics of one projection site, accumulated over calibration tokens.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace lrq {

/// H = X^T X / T (in x in, F64) and mean |x| per input channel (F64) over T tokens.
/// Per-window products run in F32 through the seam (a window of 512-2048 rows loses nothing
/// that matters), the running sums in F64 so 10^5 tokens do not erode them. The sums live on
/// `device`; on the GPU the window product is ops::xtx (TF32 or BF16 when the matmul precision
/// allows) and the F64 sums are updated there, so no activation crosses to the host.
class SiteStats {
 public:
  explicit SiteStats(int64_t in, Device device = Device::CPU);
  void add(const Tensor& x);  // x: T x in, F32 (copied to the statistics' device if elsewhere)
  /// Divides by the token count; call once after the last add().
  void finalize();
  Device device() const { return H_.device(); }
  /// A finalized copy with H and mean |x| on `device` (derived quantities are not carried).
  SiteStats to(Device device) const;
  const Tensor& H() const { return H_; }
  const Tensor& mean_abs() const { return mean_abs_; }
  int64_t tokens() const { return tokens_; }
  int64_t in() const { return in_; }
  /// Derived quantities that several projections of one site share (q/k/v read one H, so
  /// GPTQ's factor of the damped inverse is the same for all three): made once per key.
  template <class T>
  std::shared_ptr<const T> memo(const std::string& key,
                                const std::function<std::shared_ptr<const T>()>& make) const {
    auto& slot = memo_[key];
    if (!slot) slot = make();
    return std::static_pointer_cast<const T>(slot);
  }

 private:
  SiteStats() = default;
  void flush();  // GPU: pending F32 window products into the F64 sum
  static constexpr int64_t kFlushTokens = 16384;
  int64_t in_ = 0, tokens_ = 0, pending_ = 0;
  Tensor H_, mean_abs_, scratch_;
  bool final_ = false;
  mutable std::map<std::string, std::shared_ptr<const void>> memo_;
};

}  // namespace lrq
