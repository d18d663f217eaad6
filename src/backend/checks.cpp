// The shared argument checks (backend/checks.h). Messages name the op and the tensors.
#include "backend/checks.h"

#include <algorithm>
#include <cmath>

#if defined(__GNUC__)
#pragma GCC diagnostic error "-Wmissing-declarations"  // a drifted signature fails to compile
#endif

namespace lrq::checks {
namespace {

void need_matrix(const Tensor& t, const char* op, const char* name) {
  if (t.ndim() != 2) fail("", "{}: {} must be a matrix, got {}", op, name, t.str());
}
void need_float(const Tensor& t, const char* op) {
  if (t.dtype() != DType::F32 && t.dtype() != DType::F64)
    fail("", "{}: F32 or F64 required, got {}", op, t.str());
}
void same_type(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() != b.dtype()) fail("", "{}: mixed dtypes {} and {}", op, a.str(), b.str());
}
void need_square(const Tensor& A, const char* op) {
  need_matrix(A, op, "A");
  need_float(A, op);
  if (A.dim(0) != A.dim(1)) fail("", "{}: square matrix required, got {}", op, A.str());
}
void need_tall(const Tensor& A, const char* op) {
  if (A.ndim() != 2 || (A.dtype() != DType::F32 && A.dtype() != DType::F64))
    fail("", "{}: an F32 or F64 matrix is required, got {}", op, A.str());
}
void need(const Tensor& t, DType d, const char* op, const char* name) {
  if (t.dtype() != d) fail("", "{}: {} must be {}, got {}", op, name, dtype_name(d), t.str());
}
void need_f32(const Tensor& t, const char* op, const char* name) { need(t, DType::F32, op, name); }
std::string opt_str(const Tensor& t) { return t.defined() ? t.str() : "-"; }

}  // namespace

// ------------------------------------------------------------------ dense linear algebra
void gemm(const Tensor& A, bool ta, const Tensor& B, bool tb, const Tensor& C, double, double) {
  need_matrix(A, "gemm", "A");
  need_matrix(B, "gemm", "B");
  need_matrix(C, "gemm", "C");
  need_float(A, "gemm");
  same_type(A, B, "gemm");
  same_type(A, C, "gemm");
  const int64_t m = ta ? A.dim(1) : A.dim(0), k = ta ? A.dim(0) : A.dim(1);
  const int64_t kb = tb ? B.dim(1) : B.dim(0), n = tb ? B.dim(0) : B.dim(1);
  if (k != kb || C.dim(0) != m || C.dim(1) != n)
    fail("", "gemm: shapes {}{} x {}{} -> {}", A.str(), ta ? "^T" : "", B.str(), tb ? "^T" : "",
         C.str());
}

void gemv(const Tensor& A, bool ta, const Tensor& x, const Tensor& y, double, double) {
  need_matrix(A, "gemv", "A");
  need_float(A, "gemv");
  same_type(A, x, "gemv");
  same_type(A, y, "gemv");
  const int64_t rows = ta ? A.dim(1) : A.dim(0), cols = ta ? A.dim(0) : A.dim(1);
  if (x.numel() != cols || y.numel() != rows)
    fail("", "gemv: shapes {}{} x {} -> {}", A.str(), ta ? "^T" : "", x.str(), y.str());
}

void linear(const Tensor& x, const Tensor& W, const Tensor& y) {
  need_f32(x, "linear", "x");
  need_f32(y, "linear", "y");
  if (W.ndim() != 2) fail("", "linear: weight must be a matrix, got {}", W.str());
  const int64_t out = W.dim(0), in = W.dim(1), T = x.numel() / std::max<int64_t>(in, 1);
  if (x.ndim() == 0 || y.ndim() == 0 || x.dim(-1) != in || y.dim(-1) != out ||
      y.numel() != T * out)
    fail("", "linear: x {} W {} y {}", x.str(), W.str(), y.str());
  if (W.dtype() != DType::F32 && W.dtype() != DType::BF16 && W.dtype() != DType::F16)
    fail("", "linear: unsupported weight dtype {}", W.str());
}

void linear_many(const Tensor& x, std::span<const Tensor> W, std::span<const Tensor> y) {
  if (W.size() != y.size()) fail("", "linear_many: {} weights for {} outputs", W.size(), y.size());
  for (size_t i = 0; i < W.size(); ++i) linear(x, W[i], y[i]);
}

void cholesky(const Tensor& A) { need_square(A, "cholesky"); }
void spd_inverse(const Tensor& A) { need_square(A, "spd_inverse"); }

void trsm_lower(const Tensor& L, bool, const Tensor& B) {
  need_square(L, "trsm_lower");
  need_matrix(B, "trsm_lower", "B");
  same_type(L, B, "trsm_lower");
  if (B.dim(0) != L.dim(0)) fail("", "trsm_lower: {} vs {}", L.str(), B.str());
}

void eigh(const Tensor& A, const Tensor& w, const Tensor& V) {
  need_square(A, "eigh");
  same_type(A, w, "eigh");
  same_type(A, V, "eigh");
  if (w.numel() != A.dim(0) || V.shape() != A.shape())
    fail("", "eigh: outputs {} {} for {}", w.str(), V.str(), A.str());
}

void svd(const Tensor& A, const Tensor& U, const Tensor& S, const Tensor& Vt) {
  need_matrix(A, "svd", "A");
  need_float(A, "svd");
  same_type(A, U, "svd");
  same_type(A, S, "svd");
  same_type(A, Vt, "svd");
  const int64_t m = A.dim(0), n = A.dim(1), k = std::min(m, n);
  if (U.shape() != Shape{m, k} || S.numel() != k || Vt.shape() != Shape{k, n})
    fail("", "svd: outputs U {} S {} Vt {} for A {}", U.str(), S.str(), Vt.str(), A.str());
}

void orthonormalize_columns(const Tensor& A) {
  need_matrix(A, "orthonormalize_columns", "A");
  need_float(A, "orthonormalize_columns");
  if (A.dim(0) < A.dim(1))
    fail("", "orthonormalize_columns: needs rows >= columns, got {}", A.str());
}

// ------------------------------------------------------------------ sketching
void fill_gaussian(const Tensor& X, uint64_t) {
  if (X.dtype() != DType::F32) fail("", "fill_gaussian: F32 required, got {}", X.str());
}

void gram(const Tensor& A, const Tensor& G) {
  need_tall(A, "gram");
  const int64_t k = A.dim(1);
  if (G.dtype() != DType::F64 || G.shape() != Shape{k, k})
    fail("", "gram: G must be F64[{},{}] for {}, got {}", k, k, A.str(), G.str());
}

void cholesky_qr(const Tensor& A, int passes) {
  need_tall(A, "cholesky_qr");
  if (A.dim(0) < A.dim(1)) fail("", "cholesky_qr: needs rows >= columns, got {}", A.str());
  if (passes < 1) fail("", "cholesky_qr: passes must be >= 1, got {}", passes);
}

// ------------------------------------------------------------------ matrix utilities
void scale(const Tensor& X, double, const Tensor& r, const Tensor& c) {
  need_float(X, "scale");
  if (X.ndim() > 2) fail("", "scale: a matrix or vector is required, got {}", X.str());
  const int64_t n = X.ndim() == 2 ? X.dim(1) : X.numel(), m = X.ndim() == 2 ? X.dim(0) : 1;
  if ((r.defined() && (r.dtype() != X.dtype() || r.numel() != m)) ||
      (c.defined() && (c.dtype() != X.dtype() || c.numel() != n)))
    fail("", "scale: row scale {} and column scale {} do not fit {}", opt_str(r), opt_str(c),
         X.str());
}

void transpose(const Tensor& A, const Tensor& out) {
  need_float(A, "transpose");
  if (A.ndim() != 2 || out.ndim() != 2 || out.dim(0) != A.dim(1) || out.dim(1) != A.dim(0) ||
      out.dtype() != A.dtype())
    fail("", "transpose: {} into {}", A.str(), out.str());
}

void norm_stats(const Tensor& X) { need_float(X, "norm_stats"); }

void permute_scale_cols(const Tensor& x, const Tensor& perm, const Tensor& scale,
                        const Tensor& out) {
  const int64_t n = x.ndim() ? x.dim(-1) : 0;
  const bool f64 = x.dtype() == DType::F64 && !scale.defined();
  if ((x.dtype() != DType::F32 && !f64) || out.dtype() != x.dtype() || out.shape() != x.shape() ||
      (perm.defined() && (perm.dtype() != DType::I32 || perm.numel() != n)) ||
      (scale.defined() && scale.numel() != n))
    fail("", "permute_scale_cols: x {} perm {} scale {} out {}", x.str(), opt_str(perm),
         opt_str(scale), out.str());
}

// ------------------------------------------------------------------ statistics, fills
void accumulate(const Tensor& acc, const Tensor& x, double) {
  need(acc, DType::F64, "accumulate", "acc");
  if (acc.numel() != x.numel()) fail("", "accumulate: {} += {}", acc.str(), x.str());
  if (x.dtype() != DType::F32) need(x, DType::F64, "accumulate", "x");
}

void add_abs_col_sums(const Tensor& x, const Tensor& acc) {
  need_f32(x, "add_abs_col_sums", "x");
  need(acc, DType::F64, "add_abs_col_sums", "acc");
  if (x.ndim() != 2 || acc.numel() != x.dim(1))
    fail("", "add_abs_col_sums: {} into {}", x.str(), acc.str());
}

void xtx(const Tensor& X, const Tensor& G, bool) {
  if (X.ndim() != 2 || X.dtype() != DType::F32 || G.dtype() != DType::F32 ||
      G.shape() != Shape{X.dim(1), X.dim(1)})
    fail("", "xtx: X {} G {}", X.str(), G.str());
}

void accumulate_symmetric(const Tensor& acc, const Tensor& x) {
  if (acc.ndim() != 2 || acc.dim(0) != acc.dim(1) || acc.dtype() != DType::F64 ||
      x.dtype() != DType::F32 || x.shape() != acc.shape())
    fail("", "accumulate_symmetric: {} += {}", acc.str(), x.str());
}

void to_bf16(const Tensor& x) {
  if (x.dtype() != DType::F32) fail("", "to_bf16: x must be F32, got {}", x.str());
}

void dot(const Tensor& A, const Tensor& B) {
  need(A, DType::F64, "dot", "A");
  need(B, DType::F64, "dot", "B");
  if (A.numel() != B.numel()) fail("", "dot: {} . {}", A.str(), B.str());
}

void fill_randn(const Tensor& X, uint64_t, double) {
  if (X.dtype() != DType::F32 && X.dtype() != DType::F16 && X.dtype() != DType::BF16)
    fail("", "fill_randn: F32, F16 or BF16 required, got {}", X.str());
}

void first_nonfinite(const Tensor& x) { need(x, DType::F16, "first_nonfinite", "x"); }

// ------------------------------------------------------------------ transforms
void fwht_rows(const Tensor& X, int64_t block, int64_t skip) {
  if (block <= 0 || (block & (block - 1)) || X.ndim() == 0 || X.dim(-1) % block)
    fail("", "fwht_rows: block {} must be a power of two dividing the row length of {}", block,
         X.str());
  if (skip < 0) fail("", "fwht_rows: negative skip_blocks {}", skip);
  need_float(X, "fwht_rows");
}

// ------------------------------------------------------------------ transformer pieces
namespace {
// The activations of a transformer piece: F32, or F64 for the gradient checks, all alike.
void need_activations(std::initializer_list<std::pair<const Tensor*, const char*>> ts,
                      const char* op) {
  for (const auto& [t, name] : ts)
    if (!t->defined()) fail("", "{}: {} is undefined", op, name);
  const Tensor& first = *ts.begin()->first;
  if (first.dtype() != DType::F32 && first.dtype() != DType::F64)
    fail("", "{}: {} must be F32 or F64, got {}", op, ts.begin()->second, first.str());
  for (const auto& [t, name] : ts)
    if (t->dtype() != first.dtype())
      fail("", "{}: {} is {}, {} is {}: one dtype required", op, ts.begin()->second,
           first.str(), name, t->str());
}
bool stored_float(const Tensor& t) {
  return t.dtype() == DType::F32 || t.dtype() == DType::F16 || t.dtype() == DType::BF16 ||
         t.dtype() == DType::F64;
}
void need_norm_weight(const Tensor& w, const char* op) {
  if (!w.defined() || !stored_float(w)) fail("", "{}: unsupported weight {}", op, opt_str(w));
}
void need_rope(const Tensor& x, int64_t n_heads, int64_t hd, const char* op) {
  need_activations({{&x, "x"}}, op);
  const int64_t width = x.ndim() ? x.dim(-1) : 0;
  if (n_heads <= 0 || hd <= 0 || width != n_heads * hd || hd % 2)
    fail("", "{}: {} for {} heads of {}", op, x.str(), n_heads, hd);
}
}  // namespace

void rmsnorm(const Tensor& x, const Tensor& w, float, const Tensor& out) {
  need_activations({{&x, "x"}, {&out, "out"}}, "rmsnorm");
  const int64_t d = x.ndim() ? x.dim(-1) : 0;
  if (d == 0 || w.numel() != d || out.numel() != x.numel())
    fail("", "rmsnorm: x {} w {} out {}", x.str(), w.str(), out.str());
  need_norm_weight(w, "rmsnorm");
}

void rope(const Tensor& x, int64_t n_heads, int64_t hd, int64_t, float, bool) {
  need_rope(x, n_heads, hd, "rope");
}

void attention(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
               int64_t hd, int64_t pos0, const Tensor& out) {
  need_activations({{&q, "q"}, {&K, "K"}, {&V, "V"}, {&out, "out"}}, "attention");
  if (nh <= 0 || nkv <= 0 || hd <= 0 || pos0 < 0 || nh % nkv || q.ndim() != 2 || K.ndim() != 2 ||
      V.ndim() != 2)
    fail("", "attention: q {} K {} V {} (heads {}/{}, head_dim {}, pos0 {})", q.str(), K.str(),
         V.str(), nh, nkv, hd, pos0);
  const int64_t qw = nh * hd, kw = nkv * hd, T = q.numel() / qw;
  if (q.dim(-1) != qw || K.dim(-1) != kw || V.dim(-1) != kw || K.dim(0) < pos0 + T ||
      V.dim(0) < pos0 + T || out.numel() != q.numel())
    fail("", "attention: q {} K {} V {} out {} (heads {}/{}, pos0 {})", q.str(), K.str(), V.str(),
         out.str(), nh, nkv, pos0);
}

void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  need_activations({{&gate, "gate"}, {&up, "up"}, {&out, "out"}}, "silu_mul");
  if (gate.numel() != up.numel() || out.numel() != gate.numel())
    fail("", "silu_mul: {} {} {}", gate.str(), up.str(), out.str());
}

void add_inplace(const Tensor& x, const Tensor& y) {
  need_activations({{&x, "x"}, {&y, "y"}}, "add_inplace");
  if (x.numel() != y.numel()) fail("", "add_inplace: {} {}", x.str(), y.str());
}

void fake_quant_rows(const Tensor& x, int bits) {
  need_f32(x, "fake_quant_rows", "x");
  if (x.ndim() != 2) fail("", "fake_quant_rows: x must be a matrix, got {}", x.str());
  if (bits < 2 || bits > 16) fail("", "fake_quant_rows: bits {} outside 2..16", bits);
}

void fake_quant_tensor(const Tensor& x, float step, int bits) {
  need_f32(x, "fake_quant_tensor", "x");
  if (!std::isfinite(step) || !(step > 0))
    fail("", "fake_quant_tensor: step {} must be finite and > 0", step);
  if (bits < 2 || bits > 16) fail("", "fake_quant_tensor: bits {} outside 2..16", bits);
}

void add_row_vector(const Tensor& x, const Tensor& b) {
  need_f32(x, "add_row_vector", "x");
  const int64_t d = x.ndim() ? x.dim(-1) : 0;
  if (d == 0 || b.numel() != d) fail("", "add_row_vector: {} {}", x.str(), b.str());
}

void embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) {
  need_f32(out, "embedding", "out");
  if (table.ndim() != 2) fail("", "embedding: table must be a matrix, got {}", table.str());
  if (out.numel() != int64_t(ids.size()) * table.dim(1))
    fail("", "embedding: {} {}", table.str(), out.str());
  for (const int32_t id : ids)
    if (id < 0 || id >= table.dim(0))
      fail("", "embedding: token id {} outside {}", id, table.str());
}

// ------------------------------------------------------------------ transformer backward
namespace {
// q, K, V (and their gradients) of a training window: T x (heads * d), T the same for all.
void need_window(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                 int64_t hd, const char* op) {
  if (nh <= 0 || nkv <= 0 || hd <= 0 || nh % nkv || q.ndim() != 2 || K.ndim() != 2 ||
      V.ndim() != 2 || q.dim(1) != nh * hd || K.dim(1) != nkv * hd || V.shape() != K.shape() ||
      K.dim(0) != q.dim(0))
    fail("", "{}: q {} K {} V {} are not one window of {}/{} heads of {}", op, q.str(), K.str(),
         V.str(), nh, nkv, hd);
}
}  // namespace

void attention_train(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                     int64_t hd, const Tensor& out, const Tensor& lse) {
  const char* op = "attention_train";
  need_activations({{&q, "q"}, {&K, "K"}, {&V, "V"}, {&out, "out"}, {&lse, "lse"}}, op);
  need_window(q, K, V, nh, nkv, hd, op);
  if (out.shape() != q.shape() || lse.shape() != Shape{nh, q.dim(0)})
    fail("", "{}: out {} must be like q {}, lse {} must be [{}, {}]", op, out.str(), q.str(),
         lse.str(), nh, q.dim(0));
}

void attention_backward(const Tensor& q, const Tensor& K, const Tensor& V, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, int64_t nh, int64_t nkv,
                        int64_t hd, const Tensor& dq, const Tensor& dK, const Tensor& dV) {
  const char* op = "attention_backward";
  need_activations({{&q, "q"}, {&K, "K"}, {&V, "V"}, {&out, "out"}, {&lse, "lse"},
                    {&dout, "dout"}, {&dq, "dq"}, {&dK, "dK"}, {&dV, "dV"}},
                   op);
  need_window(q, K, V, nh, nkv, hd, op);
  if (out.shape() != q.shape() || dout.shape() != q.shape() || dq.shape() != q.shape() ||
      dK.shape() != K.shape() || dV.shape() != K.shape() || lse.shape() != Shape{nh, q.dim(0)})
    fail("", "{}: out {} dout {} dq {} dK {} dV {} lse {} do not fit q {} K {}", op, out.str(),
         dout.str(), dq.str(), dK.str(), dV.str(), lse.str(), q.str(), K.str());
  for (const Tensor* g : {&dq, &dK, &dV})
    for (const Tensor* in : {&q, &K, &V, &out, &lse, &dout})
      if (g->raw() == in->raw())
        fail("", "{}: an output aliases an input ({})", op, g->str());
}

void rmsnorm_backward(const Tensor& x, const Tensor& w, float, const Tensor& dy, const Tensor& dx,
                      const Tensor& dw) {
  const char* op = "rmsnorm_backward";
  need_activations({{&x, "x"}, {&dy, "dy"}, {&dx, "dx"}}, op);
  const int64_t d = x.ndim() ? x.dim(-1) : 0;
  if (d == 0 || w.numel() != d || dy.numel() != x.numel() || dx.numel() != x.numel())
    fail("", "{}: x {} w {} dy {} dx {}", op, x.str(), w.str(), dy.str(), dx.str());
  need_norm_weight(w, op);
  if (dw.defined() && (dw.dtype() != x.dtype() || dw.numel() != d))
    fail("", "{}: dw {} must hold {} values of {}", op, dw.str(), d, dtype_name(x.dtype()));
}

void rope_backward(const Tensor& dx, int64_t n_heads, int64_t hd, int64_t, float, bool) {
  need_rope(dx, n_heads, hd, "rope_backward");
}

void silu_mul_backward(const Tensor& gate, const Tensor& up, const Tensor& dout,
                       const Tensor& dgate, const Tensor& dup) {
  need_activations({{&gate, "gate"}, {&up, "up"}, {&dout, "dout"}, {&dgate, "dgate"},
                    {&dup, "dup"}},
                   "silu_mul_backward");
  const int64_t n = gate.numel();
  if (up.numel() != n || dout.numel() != n || dgate.numel() != n || dup.numel() != n)
    fail("", "silu_mul_backward: gate {} up {} dout {} dgate {} dup {}", gate.str(), up.str(),
         dout.str(), dgate.str(), dup.str());
}

// ------------------------------------------------------------------ packed matrices
namespace {
// What the packed ops index with; the formats layer validates the rest (finite scales, ...).
void need_packed(const Packed& w, const char* op) {
  const bool bits_ok = w.bits == 2 || w.bits == 3 || w.bits == 4 || w.bits == 8;
  if (!bits_ok || !w.codes.defined() || w.codes.ndim() != 2 || w.codes.dtype() != DType::U8 ||
      w.codes.dim(1) % (4 * w.bits) != 0 || w.group <= 0 || w.group % ops::kPackedChunk != 0 ||
      w.cols() % w.group != 0)
    fail("", "{}: codes {} at {} bits, group {} is not a packed matrix", op, opt_str(w.codes),
         w.bits, w.group);
  const Shape gs{w.rows(), w.ngroups()};
  const bool codebook = w.format == ops::PackedFormat::Codebook;
  if (!w.scales.defined() || w.scales.dtype() != DType::F16 || w.scales.shape() != gs ||
      w.offsets.defined() != (w.format == ops::PackedFormat::Affine) ||
      (w.offsets.defined() && (w.offsets.dtype() != DType::F16 || w.offsets.shape() != gs)) ||
      w.codebook.defined() != codebook ||
      (codebook && (w.codebook.dtype() != DType::F32 || w.codebook.numel() != 1 << w.bits)))
    fail("", "{}: scales {} offsets {} codebook {} do not fit codes {}", op, opt_str(w.scales),
         opt_str(w.offsets), opt_str(w.codebook), w.codes.str());
  for (const Tensor* t : {&w.scales, &w.offsets, &w.codebook})
    if (t->defined() && t->device() != w.codes.device())
      fail("", "{}: {} is not on the codes' device ({})", op, t->str(),
           device_name(w.codes.device()));
}
}  // namespace

namespace {
void need_codec(const Tensor& codes, int bits, const Tensor& packed, const char* op) {
  if (codes.ndim() != 2 || codes.dtype() != DType::U8 || codes.dim(1) % ops::kPackedChunk != 0 ||
      (bits != 2 && bits != 3 && bits != 4 && bits != 8) || packed.dtype() != DType::U8 ||
      packed.shape() != Shape{codes.dim(0), codes.dim(1) / ops::kPackedChunk * 4 * bits})
    fail("", "{}: codes {} at {} bits, packed {}", op, codes.str(), bits, packed.str());
}
}  // namespace

void packed_encode(const Tensor& codes, int bits, const Tensor& packed) {
  need_codec(codes, bits, packed, "packed_encode");
}

void packed_decode(const Tensor& packed, int bits, const Tensor& codes) {
  need_codec(codes, bits, packed, "packed_decode");
}

void packed_dequantize(const Packed& w, const Tensor& out) {
  need_packed(w, "packed_dequantize");
  if (out.dtype() != DType::F32 || out.numel() != w.rows() * w.cols())
    fail("", "packed_dequantize: out {} for a [{}, {}] matrix", out.str(), w.rows(), w.cols());
}

void packed_matmul(const Packed& w, const Tensor& x, const Tensor& y, bool,
                   std::span<const LowRankTerm> terms) {
  need_packed(w, "packed_matmul");
  const int64_t rows = w.rows(), cols = w.cols();
  if (x.ndim() != 2 || x.dtype() != DType::F32 || x.dim(1) != cols)
    fail("", "packed_matmul: x must be F32 [T, {}], got {}", cols, x.str());
  const int64_t T = x.dim(0);
  if (y.ndim() != 2 || y.dtype() != DType::F32 || y.dim(0) != T || y.dim(1) != rows)
    fail("", "packed_matmul: y must be F32 [{}, {}], got {}", T, rows, y.str());
  const Device dev = w.codes.device();
  for (const LowRankTerm& tm : terms) {
    const int64_t r = tm.L.defined() && tm.L.ndim() == 2 ? tm.L.dim(1) : -1;
    const bool L_ok = tm.L.dtype() == DType::F16 || tm.L.dtype() == DType::F32;
    if (r < 0 || tm.L.dim(0) != rows || !L_ok || !tm.h.defined() || tm.h.dtype() != DType::F32 ||
        tm.h.shape() != Shape{T, r} || tm.L.device() != dev || tm.h.device() != dev)
      fail("", "packed_matmul: low-rank term L {} h {} does not fit [{}, r] x [{}, r] on {}",
           opt_str(tm.L), opt_str(tm.h), rows, T, device_name(dev));
  }
}

}  // namespace lrq::checks

// ------------------------------------------------------------------ LoRDS matrices
namespace lrq::checks {
namespace {
void need_lords(const Lords& w, const char* op) {
  const bool bits_ok = w.bits == 2 || w.bits == 3 || w.bits == 4 || w.bits == 8;
  if (!bits_ok || !w.codes.defined() || w.codes.ndim() != 2 || w.codes.dtype() != DType::U8 ||
      w.codes.dim(1) % (4 * w.bits) != 0)
    fail("", "{}: codes {} at {} bits are not a packed matrix", op, opt_str(w.codes), w.bits);
  const int64_t r = w.A.defined() && w.A.ndim() == 2 ? w.A.dim(0) : -1;
  if (r < 1 || w.A.dtype() != DType::F16 || w.A.dim(1) != w.cols() || !w.B.defined() ||
      w.B.dtype() != DType::F16 || w.B.shape() != Shape{w.rows(), r} || !w.codebook.defined() ||
      w.codebook.dtype() != DType::F32 || w.codebook.numel() != 1 << w.bits)
    fail("", "{}: B {} A {} codebook {} do not fit codes {}", op, opt_str(w.B), opt_str(w.A),
         opt_str(w.codebook), w.codes.str());
  for (const Tensor* t : {&w.B, &w.A, &w.codebook})
    if (t->device() != w.codes.device())
      fail("", "{}: {} is not on the codes' device ({})", op, t->str(),
           device_name(w.codes.device()));
}
}  // namespace

void lords_dequantize(const Lords& w, const Tensor& out) {
  need_lords(w, "lords_dequantize");
  if (out.dtype() != DType::F32 || out.numel() != w.rows() * w.cols())
    fail("", "lords_dequantize: out {} for a [{}, {}] matrix", out.str(), w.rows(), w.cols());
}

void lords_matmul(const Lords& w, const Tensor& x, const Tensor& y, bool) {
  need_lords(w, "lords_matmul");
  if (x.ndim() != 2 || x.dtype() != DType::F32 || x.dim(1) != w.cols())
    fail("", "lords_matmul: x must be F32 [T, {}], got {}", w.cols(), x.str());
  if (y.ndim() != 2 || y.dtype() != DType::F32 || y.dim(0) != x.dim(0) || y.dim(1) != w.rows())
    fail("", "lords_matmul: y must be F32 [{}, {}], got {}", x.dim(0), w.rows(), y.str());
}

void lords_assign(const Tensor& W, const Tensor& S, const Tensor& codebook, const Tensor& h,
                  const Tensor& codes, const Tensor& D, const Tensor& G) {
  const char* op = "lords_assign";
  need_matrix(W, op, "W");
  need_f32(W, op, "W");
  need_f32(S, op, "S");
  need_f32(codebook, op, "codebook");
  if (S.shape() != W.shape() || codebook.ndim() != 1 || codebook.numel() < 1 ||
      codebook.numel() > 256 || (h.defined() && (h.dtype() != DType::F32 || h.numel() != W.dim(1))))
    fail("", "{}: W {} S {} codebook {} h {} do not fit", op, W.str(), S.str(), codebook.str(),
         opt_str(h));
  if ((codes.defined() && (codes.dtype() != DType::U8 || codes.shape() != W.shape())) ||
      (D.defined() && (D.dtype() != DType::F32 || D.shape() != W.shape())) ||
      (G.defined() && (G.dtype() != DType::F32 || G.shape() != W.shape())))
    fail("", "{}: outputs codes {} D {} G {} must be [{}] like W", op, opt_str(codes), opt_str(D),
         opt_str(G), W.str());
}

void scale_by_codebook(const Tensor& G, const Tensor& codes, const Tensor& codebook, double) {
  if (G.dtype() != DType::F32 || codes.dtype() != DType::U8 || codes.shape() != G.shape() ||
      codebook.dtype() != DType::F32 || codebook.ndim() != 1 || codebook.numel() > 256)
    fail("", "scale_by_codebook: G {} codes {} codebook {}", G.str(), codes.str(),
         codebook.str());
}

// ------------------------------------------------------------------ optimization
void adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
               const AdamParams& a) {
  for (const Tensor* t : {&p, &g, &m, &v})
    if (t->dtype() != DType::F32 || t->shape() != p.shape())
      fail("", "adam_step: p {} g {} m {} v {} must be F32 of one shape", p.str(), g.str(),
           m.str(), v.str());
  if (a.step < 1 || !(a.lr >= 0) || !(a.beta1 >= 0 && a.beta1 < 1) || !(a.beta2 >= 0 && a.beta2 < 1))
    fail("", "adam_step: step {} lr {} betas {} {} out of range", a.step, a.lr, a.beta1, a.beta2);
}


// ------------------------------------------------------------------ whole-model training
void cross_entropy(const Tensor& logits, std::span<const int32_t> targets, const Tensor& dlogits,
                   double scale) {
  need_activations({{&logits, "logits"}}, "cross_entropy");
  if (logits.ndim() != 2 || logits.dim(1) < 1 || int64_t(targets.size()) != logits.dim(0))
    fail("", "cross_entropy: logits {} for {} targets", logits.str(), targets.size());
  if (dlogits.defined() && (dlogits.dtype() != logits.dtype() || dlogits.shape() != logits.shape()))
    fail("", "cross_entropy: dlogits {} must be like logits {}", dlogits.str(), logits.str());
  for (const int32_t t : targets)
    if (t >= logits.dim(1))
      fail("", "cross_entropy: target {} outside the {} logits of a row", t, logits.dim(1));
  if (!std::isfinite(scale)) fail("", "cross_entropy: scale {} is not finite", scale);
}

void embedding_backward(std::span<const int32_t> ids, const Tensor& dout, const Tensor& dtable) {
  need_activations({{&dout, "dout"}, {&dtable, "dtable"}}, "embedding_backward");
  if (dtable.ndim() != 2 || dout.ndim() != 2 || dout.dim(1) != dtable.dim(1) ||
      dout.dim(0) != int64_t(ids.size()))
    fail("", "embedding_backward: dout {} dtable {} for {} ids", dout.str(), dtable.str(),
         ids.size());
  for (const int32_t id : ids)
    if (id < 0 || id >= dtable.dim(0))
      fail("", "embedding_backward: token id {} outside {}", id, dtable.str());
}

void lords_ste_backward(const Tensor& W, const Tensor& S, const Tensor& codes,
                        const Tensor& codebook, const Tensor& G, const Tensor& dW,
                        const Tensor& dS) {
  const char* op = "lords_ste_backward";
  need_matrix(W, op, "W");
  for (const Tensor* t : {&W, &S, &G}) need_f32(*t, op, "W, S and G");
  need_f32(codebook, op, "codebook");
  if (S.shape() != W.shape() || G.shape() != W.shape() || codes.dtype() != DType::U8 ||
      codes.shape() != W.shape() || codebook.ndim() != 1 || codebook.numel() < 1 ||
      codebook.numel() > 256)
    fail("", "{}: W {} S {} codes {} codebook {} G {} do not fit", op, W.str(), S.str(),
         codes.str(), codebook.str(), G.str());
  for (const Tensor* t : {&dW, &dS})
    if (t->defined() && (t->dtype() != DType::F32 || t->shape() != W.shape()))
      fail("", "{}: outputs dW {} dS {} must be F32 like W {}", op, opt_str(dW), opt_str(dS),
           W.str());
}

}  // namespace lrq::checks
