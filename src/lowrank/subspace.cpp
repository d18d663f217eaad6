// Subspace iteration and projected SVD: the steps rsvd and the blocked sketch share.
//
// Two implementations of the same two steps. On the CPU, LAPACK's Householder QR and SVD are
// cheap at sketch sizes and stay the reference. On the GPU their cuSOLVER counterparts are
// launch-bound panel algorithms (milliseconds for a 4096 x 74 QR, more for gesvd), while the
// products with the matrix take tens of microseconds; there every step is GEMMs plus a k x k
// problem solved in double on the host: Cholesky QR (ops::cholesky_qr) instead of Householder,
// and the eigendecomposition of the k x k Gram matrix of the projection instead of its SVD.
#include "lowrank/extraction.h"

#include <cmath>
#include <vector>

namespace lrq::lowrank_detail {
namespace {

// Orthonormalization inside the power iteration only has to keep the small directions from
// drowning in rounding, so on the GPU one Cholesky QR pass does; the basis the projection
// uses gets two (orthonormal to working precision).
void orthonormalize(const Tensor& Y, bool final_basis) {
  if (Y.device() == Device::CPU)
    ops::orthonormalize_columns(Y);
  else
    ops::cholesky_qr(Y, final_basis ? 2 : 1);
}

// GPU: pushes the `count` leading triplets of Q^T E through Bt = E^T Q (n x s, the same cost
// as Q^T E) and the eigendecomposition of B B^T = Bt^T Bt (s x s, double, on the host). With
// w_i its eigenvectors, the pieces are (Q w_i) (w_i^T Q^T E): exact projections of E onto unit
// vectors of span(Q), whatever the rounding of the eigenvectors, so the residual identity
// ||E_{k+1}||^2 = ||E_k||^2 - sigma_k^2 holds as for the SVD path.
bool push_leading_triplets_gram(Extraction& ex, const Tensor& Q, int64_t count) {
  const int64_t m = ex.rows(), n = ex.cols(), s = Q.dim(1);
  const Device dev = ex.device();
  Tensor Bt = Tensor::empty({n, s}, DType::F32, dev), G = Tensor::empty({s, s}, DType::F64, dev);
  ex.apply_t(Q, Bt);
  ops::gram(Bt, G);
  const Tensor Gh = G.to(Device::CPU);
  Tensor w = Tensor::empty({s}, DType::F64), V = Tensor::empty({s, s}, DType::F64);
  // On the host: a one-CTA Jacobi on the GPU took ~420 us at s = 40 against ~130 us here
  // (bench/NOTES.md), and cuSOLVER's syevd is launch-bound at these sizes.
  ops::eigh(Gh, w, V);  // ascending
  // Column i of W1 is sigma_i w_i, of W2 w_i / sigma_i (0 when sigma_i vanishes: the piece is
  // zero either way), for the leading eigenpairs in descending order.
  // W1 above W2 in one tensor: one upload instead of two while the GPU waits.
  Tensor W12 = Tensor::empty({2 * s, count});
  const Tensor W1 = W12.rows(0, s), W2 = W12.rows(s, 2 * s);
  std::vector<double> sigma(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t e = s - 1 - i;
    const double sg = std::sqrt(std::max(0.0, w.at<double>(e)));
    const float inv = float(1.0 / sg);
    const double inv_ok = sg > 0 && std::isfinite(inv) ? inv : 0.0;
    sigma[size_t(i)] = sg;
    for (int64_t r = 0; r < s; ++r) {
      const double v = V.at<double>(r * s + e);
      W1.at<float>(r * count + i) = float(sg * v);
      W2.at<float>(r * count + i) = float(inv_ok * v);
    }
  }
  Tensor Lt = Tensor::empty({count, m}, DType::F32, dev), R = Tensor::empty({count, n}, DType::F32, dev);
  const Tensor W12d = W12.to(dev);
  ops::gemm(W12d.rows(0, s), true, Q, true, Lt);  // rows sigma_i (Q w_i)^T
  ops::gemm(W12d.rows(s, 2 * s), true, Bt, true, R);  // rows w_i^T Q^T E / sigma_i
  return ex.push_rows(Lt, R, sigma);
}

}  // namespace

Tensor range_finder(const Extraction& ex, int64_t s, int iters, std::mt19937_64& rng) {
  const Device dev = ex.device();
  Tensor Y = Tensor::empty({ex.rows(), s}, DType::F32, dev), Z = Tensor::empty({ex.cols(), s}, DType::F32, dev);
  ex.apply(gaussian({ex.cols(), s}, rng, dev), Y);
  orthonormalize(Y, iters == 0);
  // Orthonormalizing every half step keeps the small singular directions from drowning in
  // F32 rounding (Halko et al. section 4.5).
  for (int t = 0; t < iters; ++t) {
    ex.apply_t(Y, Z);
    orthonormalize(Z, false);
    ex.apply(Z, Y);
    orthonormalize(Y, t + 1 == iters);
  }
  return Y;
}

bool push_leading_triplets(Extraction& ex, const Tensor& Q, int64_t count) {
  if (ex.device() != Device::CPU) return push_leading_triplets_gram(ex, Q, count);
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
