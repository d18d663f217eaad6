#include "formats/tensor_checks.h"

#include <cstring>

#include "backend/ops.h"
#include "core/error.h"

namespace lrq {

void need_finite_f16(const Tensor& t, std::string_view where, std::string_view name) {
  if (const int64_t bad = ops::first_nonfinite(t); bad >= 0)
    fail(where, "{} contains inf or NaN at element {}", name, bad);
}

void need_finite_nonzero_f16(const Tensor& t, std::string_view where, std::string_view name) {
  need_finite_f16(t, where, name);
  const Tensor c = t.to(Device::CPU);
  const uint8_t* p = static_cast<const uint8_t*>(c.raw());
  for (int64_t i = 0; i < c.numel(); ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    if ((h & 0x7fffu) == 0) fail(where, "{} is zero at element {}", name, i);
  }
}

}  // namespace lrq
