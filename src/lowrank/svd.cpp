// Exact truncated SVD: the reference every other method is measured against.
#include "lowrank/extraction.h"

namespace lrq::lowrank_detail {

void factor_svd(Extraction& ex) {
  const int64_t m = ex.rows(), n = ex.cols(), k = std::min(m, n);
  const Device dev = ex.device();
  Tensor U = Tensor::empty({m, k}, DType::F32, dev), S = Tensor::empty({k}, DType::F32, dev),
         Vt = Tensor::empty({k, n}, DType::F32, dev), Ut = Tensor::empty({k, m}, DType::F32, dev);
  ops::svd(ex.matrix(), U, S, Vt);
  ops::transpose(U, Ut);
  ops::scale(Ut, 1, S);  // piece i = (s_i u_i) v_i^T
  const Tensor Sh = S.to(Device::CPU);
  for (int64_t i = 0; !ex.done(); ++i) ex.push(Ut.row(i), Vt.row(i), Sh.at<float>(i));
}

}  // namespace lrq::lowrank_detail
