// Device dispatch for backend/ops.h: the only place that knows both backends exist.
#include "backend/ops.h"

#include "backend/cpu/cpu_ops.h"
#include "backend/memory.h"
#if defined(LRQ_WITH_CUDA)
#include "backend/cuda/cuda_ops.h"
#endif

namespace lrq::ops {

void set_num_threads(int n) { cpu::set_num_threads(n); }

namespace {

Device common_device(std::initializer_list<const Tensor*> ts, const char* op) {
  Device d = (*ts.begin())->device();
  for (const Tensor* t : ts)
    if (t->defined() && t->device() != d)
      fail("", "{}: tensors on different devices ({} and {})", op, device_name(d),
           device_name(t->device()));
  return d;
}

}  // namespace

#if defined(LRQ_WITH_CUDA)
#define LRQ_DISPATCH(op, tensors, ...)                                      \
  do {                                                                      \
    if (common_device(tensors, #op) == Device::CPU) return cpu::op(__VA_ARGS__); \
    return cuda::op(__VA_ARGS__);                                           \
  } while (0)
#else
#define LRQ_DISPATCH(op, tensors, ...)                                      \
  do {                                                                      \
    if (common_device(tensors, #op) == Device::CPU) return cpu::op(__VA_ARGS__); \
    fail("", "{}: this build has no CUDA backend", #op);                    \
  } while (0)
#endif
#define T_(...) {__VA_ARGS__}

void gemm(const Tensor& A, bool ta, const Tensor& B, bool tb, const Tensor& C, double alpha,
          double beta) {
  LRQ_DISPATCH(gemm, T_(&A, &B, &C), A, ta, B, tb, C, alpha, beta);
}
void gemv(const Tensor& A, bool ta, const Tensor& x, const Tensor& y, double alpha, double beta) {
  LRQ_DISPATCH(gemv, T_(&A, &x, &y), A, ta, x, y, alpha, beta);
}
void linear_many(const Tensor& x, std::span<const Tensor> W, std::span<const Tensor> y) {
  if (W.size() != y.size()) fail("", "linear_many: {} weights for {} outputs", W.size(), y.size());
#if defined(LRQ_WITH_CUDA)
  if (x.device() != Device::CPU) return cuda::linear_many(x, W, y);
#endif
  for (size_t i = 0; i < W.size(); ++i) linear(x, W[i], y[i]);
}
void linear(const Tensor& x, const Tensor& W, const Tensor& y) {
  LRQ_DISPATCH(linear, T_(&x, &W, &y), x, W, y);
}
bool cholesky(const Tensor& A) { LRQ_DISPATCH(cholesky, T_(&A), A); }
bool spd_inverse(const Tensor& A) { LRQ_DISPATCH(spd_inverse, T_(&A), A); }
void trsm_lower(const Tensor& L, bool tl, const Tensor& B) {
  LRQ_DISPATCH(trsm_lower, T_(&L, &B), L, tl, B);
}
void eigh(const Tensor& A, const Tensor& w, const Tensor& V) {
  LRQ_DISPATCH(eigh, T_(&A, &w, &V), A, w, V);
}
void svd(const Tensor& A, const Tensor& U, const Tensor& S, const Tensor& Vt) {
  LRQ_DISPATCH(svd, T_(&A, &U, &S, &Vt), A, U, S, Vt);
}
void orthonormalize_columns(const Tensor& A) { LRQ_DISPATCH(orthonormalize_columns, T_(&A), A); }
void fill_gaussian(const Tensor& X, uint64_t key) { LRQ_DISPATCH(fill_gaussian, T_(&X), X, key); }
void gram(const Tensor& A, const Tensor& G) { LRQ_DISPATCH(gram, T_(&A, &G), A, G); }
void cholesky_qr(const Tensor& A, int passes) { LRQ_DISPATCH(cholesky_qr, T_(&A), A, passes); }
void scale(const Tensor& X, double alpha, const Tensor& r, const Tensor& c) {
  LRQ_DISPATCH(scale, T_(&X, &r, &c), X, alpha, r, c);
}
void transpose(const Tensor& A, const Tensor& out) {
  LRQ_DISPATCH(transpose, T_(&A, &out), A, out);
}
NormStats norm_stats(const Tensor& X) { LRQ_DISPATCH(norm_stats, T_(&X), X); }
void permute_scale_cols(const Tensor& x, const Tensor& perm, const Tensor& scale,
                        const Tensor& out) {
  // Shapes and dtypes are checked here, once for both backends; each backend checks only what
  // needs its own memory (the CPU the permutation's range).
  const int64_t n = x.ndim() ? x.dim(-1) : 0;
  const bool f64 = x.dtype() == DType::F64 && !scale.defined();
  if ((x.dtype() != DType::F32 && !f64) || out.dtype() != x.dtype() || out.shape() != x.shape() ||
      (perm.defined() && (perm.dtype() != DType::I32 || perm.numel() != n)) ||
      (scale.defined() && scale.numel() != n))
    fail("", "permute_scale_cols: x {} perm {} scale {} out {}", x.str(),
         perm.defined() ? perm.str() : "-", scale.defined() ? scale.str() : "-", out.str());
  LRQ_DISPATCH(permute_scale_cols, T_(&x, &perm, &scale, &out), x, perm, scale, out);
}
void fwht_rows(const Tensor& X, int64_t block, int64_t skip) {
  LRQ_DISPATCH(fwht_rows, T_(&X), X, block, skip);
}
void rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) {
  LRQ_DISPATCH(rmsnorm, T_(&x, &w, &out), x, w, eps, out);
}
void rope(const Tensor& x, int64_t nh, int64_t hd, int64_t pos0, float theta, bool inter) {
  LRQ_DISPATCH(rope, T_(&x), x, nh, hd, pos0, theta, inter);
}
void attention(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
               int64_t hd, int64_t pos0, const Tensor& out) {
  LRQ_DISPATCH(attention, T_(&q, &K, &V, &out), q, K, V, nh, nkv, hd, pos0, out);
}
void silu_mul(const Tensor& g, const Tensor& u, const Tensor& out) {
  LRQ_DISPATCH(silu_mul, T_(&g, &u, &out), g, u, out);
}
void add_inplace(const Tensor& x, const Tensor& y) { LRQ_DISPATCH(add_inplace, T_(&x, &y), x, y); }
void add_row_vector(const Tensor& x, const Tensor& b) {
  LRQ_DISPATCH(add_row_vector, T_(&x, &b), x, b);
}
void embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) {
  LRQ_DISPATCH(embedding, T_(&table, &out), table, ids, out);
}
void accumulate(const Tensor& acc, const Tensor& x, double alpha) {
  LRQ_DISPATCH(accumulate, T_(&acc, &x), acc, x, alpha);
}
void add_abs_col_sums(const Tensor& x, const Tensor& acc) {
  LRQ_DISPATCH(add_abs_col_sums, T_(&x, &acc), x, acc);
}
void accumulate_symmetric(const Tensor& acc, const Tensor& x) {
  if (acc.ndim() != 2 || acc.dim(0) != acc.dim(1) || acc.dtype() != DType::F64 ||
      x.dtype() != DType::F32 || x.shape() != acc.shape())
    fail("", "accumulate_symmetric: {} += {}", acc.str(), x.str());
  LRQ_DISPATCH(accumulate_symmetric, T_(&acc, &x), acc, x);
}
void xtx(const Tensor& X, const Tensor& G, bool accumulate) {
  if (X.ndim() != 2 || X.dtype() != DType::F32 || G.dtype() != DType::F32 ||
      G.shape() != Shape{X.dim(1), X.dim(1)})
    fail("", "xtx: X {} G {}", X.str(), G.str());
  LRQ_DISPATCH(xtx, T_(&X, &G), X, G, accumulate);
}
Tensor to_bf16(const Tensor& x) {
  if (x.dtype() != DType::F32) fail("", "to_bf16: x must be F32, got {}", x.str());
  if (x.is_cpu()) return x.to(DType::BF16);
#if defined(LRQ_WITH_CUDA)
  Tensor out = Tensor::empty(x.shape(), DType::BF16, x.device());
  cuda::to_bf16(x.data<float>(), static_cast<uint16_t*>(out.raw()), x.numel());
  return out;
#else
  fail("", "to_bf16: this build has no CUDA backend");
#endif
}
double dot(const Tensor& A, const Tensor& B) { LRQ_DISPATCH(dot, T_(&A, &B), A, B); }
void fill_randn(const Tensor& X, uint64_t seed, double std) {
  LRQ_DISPATCH(fill_randn, T_(&X), X, seed, std);
}

#if defined(LRQ_WITH_CUDA)
bool set_allow_tf32(bool allow) { return cuda::set_allow_tf32(allow); }
bool set_bf16_matmul(bool on) { return cuda::set_bf16_matmul(on); }
#else
bool set_allow_tf32(bool) { return false; }
bool set_bf16_matmul(bool) { return false; }
#endif

void synchronize() {
#if defined(LRQ_WITH_CUDA)
  if (backend::cuda_available()) cuda::synchronize();
#endif
}

}  // namespace lrq::ops
