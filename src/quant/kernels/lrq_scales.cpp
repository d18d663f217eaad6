#include "quant/kernels/lrq_scales.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "backend/ops.h"
#include "core/dtype.h"
#include "core/error.h"
#include "quant/kernels/rtn_grid.h"

namespace lrq {

namespace {

constexpr float kMinScale = 6.103515625e-05f;  // 2^-14: the stored F16 scale's floor
float round_f16(float x) { return f16_to_f32(f32_to_f16(x)); }

// The grid of one slice (n values at stride 1) for range fraction `f`: the asymmetric min/max
// grid of rtn_grid.h (range containing 0, F16 scale), its integer zero point.
void grid_at(float lo, float hi, float f, float maxq, float* s, float* z) {
  lo = std::min(lo, 0.f) * f;
  hi = std::max(hi, 0.f) * f;
  *s = std::max(round_f16((hi - lo) / maxq), kMinScale);
  *z = std::clamp(std::nearbyint(-lo / *s), 0.f, maxq);
}

// sum |w - s clamp(round(w / s), -z, maxq - z)|^p over the slice.
double lp_error(const float* w, int64_t n, float s, float z, float maxq, double p) {
  double e = 0;
  for (int64_t j = 0; j < n; ++j) {
    const float q = std::clamp(std::nearbyint(w[j] / s), -z, maxq - z);
    e += std::pow(std::fabs(double(w[j]) - double(s) * q), p);
  }
  return e;
}

template <class T>
const T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace

std::vector<Tensor*> LrqParams::list() {
  std::vector<Tensor*> v;
  for (Tensor* t : {&d1, &L, &U, &E, &r, &c})
    if (t->defined()) v.push_back(t);
  return v;
}

LrqParams LrqParams::zeros_like() const {
  LrqParams z;
  auto zl = [](const Tensor& t) {
    return t.defined() ? Tensor::zeros(t.shape(), t.dtype(), t.device()) : Tensor();
  };
  z.d1 = zl(d1);
  z.L = zl(L);
  z.U = zl(U);
  z.E = zl(E);
  z.r = zl(r);
  z.c = zl(c);
  return z;
}

LrqScales LrqScales::init(const Tensor& Win, const LrqOptions& o, uint64_t seed) {
  const char* where = "lrq";
  check_quantizable(Win, where);
  const Tensor W = Win.is_cpu() ? Win : Win.to(Device::CPU);
  const int64_t m = W.dim(0), n = W.dim(1);
  RtnOptions ro;
  ro.bits = o.bits;
  ro.group = o.group;
  const int64_t gs = resolve_grid_options(ro, n, where), ng = n / gs;
  if (!(o.lp > 0)) fail(where, "lp must be positive, got {}", o.lp);
  const int64_t k = o.full ? 0 : (o.rank > 0 ? o.rank : std::max<int64_t>(1, std::min(m, n) / 4));
  if (k > std::min(m, n)) fail(where, "rank {} exceeds min({}, {})", k, m, n);

  LrqScales s;
  s.W_ = W;
  s.bits_ = o.bits;
  s.group_ = gs;
  s.zero_ = Tensor::empty({m, ng});
  LrqParams& p = s.params;
  p.d1 = Tensor::empty({m, ng});
  const float maxq = float((1 << o.bits) - 1);
  const float* w = W.data<float>();
  float* d1 = p.d1.data<float>();
  float* zp = s.zero_.data<float>();
  // The public code's search: 100 range fractions (the L_p error decides), or min/max.
  const int fractions = o.clip ? 100 : 1;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i)
    for (int64_t g = 0; g < ng; ++g) {
      const float* ws = w + i * n + g * gs;
      const auto [lo, hi] = std::minmax_element(ws, ws + gs);
      float best_s = 0, best_z = 0;
      double best = INFINITY;
      for (int f = 0; f < fractions; ++f) {
        float sc, z;
        grid_at(*lo, *hi, 1.f - float(f) / 100.f, maxq, &sc, &z);
        const double e = fractions == 1 ? 0.0 : lp_error(ws, gs, sc, z, maxq, o.lp);
        if (e < best) {  // the first (widest) range wins ties
          best = e;
          best_s = sc;
          best_z = z;
        }
      }
      d1[i * ng + g] = std::log(best_s);
      zp[i * ng + g] = best_z;
    }
  p.r = Tensor::zeros({m});
  p.c = Tensor::zeros({n});
  if (o.full) {
    p.E = Tensor::zeros({m, n});
  } else {
    p.L = Tensor::zeros({m, k});
    p.U = Tensor::empty({k, n});
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<double> u(-1.0 / std::sqrt(double(n)), 1.0 / std::sqrt(double(n)));
    for (int64_t e = 0; e < k * n; ++e) p.U.data<float>()[e] = float(u(gen));
  }
  return s;
}

LrqScales LrqScales::as(DType dt) const {
  LrqScales s = *this;
  s.W_ = W_.to(dt);
  s.zero_ = zero_.to(dt);
  for (Tensor* t : s.params.list()) *t = t->to(dt);
  return s;
}

namespace {

// The log divisor's low-rank or element-wise part, [m, n] (zeros when L is).
Tensor log_part(const LrqParams& p, int64_t m, int64_t n, DType dt) {
  if (p.E.defined()) return p.E;
  Tensor LU = Tensor::empty({m, n}, dt);
  ops::gemm(p.L, false, p.U, false, LU);
  return LU;
}

// One pass over every element: calls f(i, j, e, s1, t, z) with the element's log divisor e,
// stored scale s1, quotient t = W / exp(e) and zero point z. Rows in parallel, each row in
// order: results written per element or reduced per row never depend on the threads.
template <class T, class F>
void for_each_element(const Tensor& W, const Tensor& zero, const LrqParams& p, int64_t gs, F&& f) {
  const int64_t m = W.dim(0), n = W.dim(1), ng = n / gs;
  const Tensor LU = log_part(p, m, n, W.dtype());
  const T *w = W.data<T>(), *lu = LU.data<T>(), *d1 = p.d1.data<T>(), *r = p.r.data<T>(),
          *c = p.c.data<T>(), *z = zero.data<T>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i)
    for (int64_t g = 0; g < ng; ++g) {
      const T dg = d1[i * ng + g], s1 = std::exp(dg), zg = z[i * ng + g];
      for (int64_t j = g * gs; j < (g + 1) * gs; ++j) {
        const T e = dg + lu[i * n + j] + r[i] + c[j];
        f(i, j, s1, w[i * n + j] / std::exp(e), zg);
      }
    }
}

template <class T>
Tensor forward_t(const Tensor& W, const Tensor& zero, const LrqParams& p, int64_t gs, int bits,
                 bool round) {
  const int64_t n = W.dim(1);
  const T maxq = T((1 << bits) - 1);
  Tensor out = Tensor::empty(W.shape(), W.dtype());
  T* o = out.data<T>();
  for_each_element<T>(W, zero, p, gs, [&](int64_t i, int64_t j, T s1, T t, T z) {
    const T q = std::clamp(round ? std::nearbyint(t) : t, -z, maxq - z);
    o[i * n + j] = s1 * q;
  });
  return out;
}

template <class T>
void backward_t(const Tensor& W, const Tensor& zero, const LrqParams& p, int64_t gs, int bits,
                const Tensor& G, LrqParams& grads) {
  const int64_t m = W.dim(0), n = W.dim(1), ng = n / gs;
  const T maxq = T((1 << bits) - 1);
  const T* gw = G.data<T>();
  // ge = dL/de per element (the gradient of the log divisor), and the direct term of d1.
  Tensor ge = Tensor::empty({m, n}, W.dtype());
  Tensor gdirect = Tensor::empty({m, n}, W.dtype());
  T *pe = ge.data<T>(), *pd = gdirect.data<T>();
  for_each_element<T>(W, zero, p, gs, [&](int64_t i, int64_t j, T s1, T t, T z) {
    const T q = std::clamp(std::nearbyint(t), -z, maxq - z);
    const size_t e = size_t(i * n + j);
    // W_hat = s1 q(t), t = W exp(-e): dW_hat/de = -s1 t where t is inside the clamp.
    pe[e] = (t >= -z && t <= maxq - z) ? -gw[e] * s1 * t : T(0);
    pd[e] = gw[e] * s1 * q;
  });
  T *gd1 = grads.d1.data<T>(), *gr = grads.r.data<T>(), *gc = grads.c.data<T>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    T row = 0;
    for (int64_t g = 0; g < ng; ++g) {
      T acc = 0;
      for (int64_t j = g * gs; j < (g + 1) * gs; ++j) acc += pe[i * n + j] + pd[i * n + j];
      gd1[i * ng + g] += acc;
    }
    for (int64_t j = 0; j < n; ++j) row += pe[i * n + j];
    gr[i] += row;
  }
  // Column sums in row order, columns split across threads.
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    T col = 0;
    for (int64_t i = 0; i < m; ++i) col += pe[i * n + j];
    gc[j] += col;
  }
  if (p.E.defined()) {
    ops::add_inplace(grads.E, ge);
  } else {
    ops::gemm(ge, false, p.U, true, grads.L, 1.0, 1.0);
    ops::gemm(p.L, true, ge, false, grads.U, 1.0, 1.0);
  }
}

}  // namespace

Tensor LrqScales::forward(bool round) const {
  return W_.dtype() == DType::F64 ? forward_t<double>(W_, zero_, params, group_, bits_, round)
                                  : forward_t<float>(W_, zero_, params, group_, bits_, round);
}

void LrqScales::backward(const Tensor& G, LrqParams& grads) const {
  if (G.shape() != W_.shape() || G.dtype() != W_.dtype())
    fail("lrq", "gradient {} for a weight {}", G.str(), W_.str());
  if (W_.dtype() == DType::F64)
    backward_t<double>(W_, zero_, params, group_, bits_, G, grads);
  else
    backward_t<float>(W_, zero_, params, group_, bits_, G, grads);
}

PackedWeight LrqScales::pack() const {
  const LrqScales s = W_.dtype() == DType::F32 ? *this : as(DType::F32);
  const int64_t m = rows(), n = cols(), ng = n / group_;
  const float maxq = float((1 << bits_) - 1);
  Tensor codes = Tensor::empty({m, n}, DType::U8);
  Tensor scales = Tensor::empty({m, ng}, DType::F16), offsets = Tensor::empty({m, ng}, DType::F16);
  uint8_t* cd = codes.data<uint8_t>();
  uint16_t *sc = scales.data<uint16_t>(), *of = offsets.data<uint16_t>();
  const float* z = s.zero_.data<float>();
  const float* d1 = s.params.d1.data<float>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t g = 0; g < ng; ++g) {
      // The stored scale is s1 rounded to F16: the codes were learned against s1, and F16 keeps
      // 11 significant bits, so W_hat moves by at most 2^-11 relative.
      const float s1 = std::max(round_f16(std::exp(d1[i * ng + g])), kMinScale);
      sc[i * ng + g] = f32_to_f16(s1);
      of[i * ng + g] = f32_to_f16(-z[i * ng + g] * s1);
    }
  for_each_element<float>(s.W_, s.zero_, s.params, group_, [&](int64_t i, int64_t j, float, float t, float zz) {
    cd[i * n + j] = uint8_t(std::clamp(std::nearbyint(t), -zz, maxq - zz) + zz);
  });
  return PackedWeight::pack(codes, scales, offsets, Tensor(), bits_, group_, QuantFormat::Affine);
}

}  // namespace lrq
