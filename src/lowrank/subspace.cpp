// Subspace iteration and projected SVD: the steps rsvd and the blocked sketch share.
#include "lowrank/extraction.h"

namespace lrq::lowrank_detail {

Tensor range_finder(const Extraction& ex, int64_t s, int iters, std::mt19937_64& rng) {
  const Device dev = ex.device();
  Tensor Y = Tensor::empty({ex.rows(), s}, DType::F32, dev), Z = Tensor::empty({ex.cols(), s}, DType::F32, dev);
  ex.apply(gaussian({ex.cols(), s}, rng, dev), Y);
  ops::orthonormalize_columns(Y);
  // Orthonormalizing every half step keeps the small singular directions from drowning in
  // F32 rounding (Halko et al. section 4.5).
  for (int t = 0; t < iters; ++t) {
    ex.apply_t(Y, Z);
    ops::orthonormalize_columns(Z);
    ex.apply(Z, Y);
    ops::orthonormalize_columns(Y);
  }
  return Y;
}

bool push_leading_triplets(Extraction& ex, const Tensor& Q, int64_t count) {
  const int64_t m = ex.rows(), n = ex.cols(), s = Q.dim(1);
  const Device dev = ex.device();
  Tensor B = Tensor::empty({s, n}, DType::F32, dev);
  ex.project(Q, B);
  Tensor U = Tensor::empty({s, s}, DType::F32, dev), S = Tensor::empty({s}, DType::F32, dev),
         Vt = Tensor::empty({s, n}, DType::F32, dev), Lt = Tensor::empty({s, m}, DType::F32, dev);
  ops::svd(B, U, S, Vt);
  // Q^T E = U S Vt, so E's projection onto Q is sum_i (Q u_i) s_i v_i^T; Lt's rows are s_i (Q u_i)^T.
  ops::gemm(U, true, Q, true, Lt);
  ops::scale(Lt, 1, S);
  const Tensor Sh = S.to(Device::CPU);
  for (int64_t i = 0; i < count; ++i)
    if (!ex.push(Lt.row(i), Vt.row(i), Sh.at<float>(i))) return false;
  return true;
}

}  // namespace lrq::lowrank_detail
