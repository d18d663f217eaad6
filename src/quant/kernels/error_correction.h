// Low-rank compensation of a quantization error E = W - Wq: the L R that minimizes
// ||(E - L R) M|| for a weighting M of the input channels. The peers differ only in M:
//   none  M = I              (ZeroQuant-V2 LoRC)
//   diag  M = diag(mean |x|) (LQER)
//   full  M = H^1/2          (QERA / EoRA: exact output-error minimizer for inputs with
//                             second moment H)
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace lrq {

enum class ErrorWeighting { None, Diag, Full };
ErrorWeighting parse_error_weighting(const std::string& s);

struct Factors {
  Tensor L;  // out x r, F32
  Tensor R;  // r x in, F32
};

/// Best rank-r approximation of E (F32 out x in) under the weighting. `H` (F64 in x in) and
/// `mean_abs` (F64 in) are the site statistics; only the ones the weighting uses are read.
/// Runs on E's device (H must be there too; mean_abs may be anywhere, n values are copied);
/// the factors are returned on E's device.
Factors fit_error_low_rank(const Tensor& E, int64_t rank, ErrorWeighting w, const Tensor& H,
                           const Tensor& mean_abs);

}  // namespace lrq
