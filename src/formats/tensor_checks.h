// Checks every stored kind makes on the tensors it loads or packs, with one wording: the
// message names the origin (`where`), the tensor and the first bad element.
#pragma once
#include <string_view>

#include "core/tensor.h"

namespace lrq {

/// An Error "<where>: <name> contains inf or NaN at element i" for an F16 tensor on any device
/// (on the GPU a kernel finds the element; the values do not cross to the host).
void need_finite_f16(const Tensor& t, std::string_view where, std::string_view name);
/// The same, and also an Error for a zero (a divisor or a per-channel factor that would
/// silently erase its channel). CPU tensors (as loaded).
void need_finite_nonzero_f16(const Tensor& t, std::string_view where, std::string_view name);

}  // namespace lrq
