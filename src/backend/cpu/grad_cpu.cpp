// The backward passes of the transformer pieces on the CPU (op_list.h, "transformer backward"),
// for F32 and F64 from one template each. They recompute what the forward computed through the
// helpers they share with it (transformer_cpu.h), so a gradient belongs to the very function
// the forward evaluated. Every reduction runs in an order fixed by the shape: the same bits
// with any thread count, as for the rest of the CPU backend.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/transformer_cpu.h"

namespace lrq::cpu {
namespace {

// ------------------------------------------------------------------ RMSNorm
// y_i = w_i x_i r with r = (mean(x^2) + eps)^-1/2 and dr/dx_j = -r^3 x_j / d, so
// dx_j = r w_j dy_j - x_j r^3 / d * sum_i w_i dy_i x_i, and dw_i = sum_t dy_ti x_ti r_t.
template <class F>
void rmsnorm_backward_impl(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                           const Tensor& dx, const Tensor& dw) {
  const int64_t d = x.dim(-1), T = x.numel() / d;
  if (T == 0) return;
  const std::vector<F> wf = weights_as<F>(w);
  const F *xp = x.data<F>(), *gp = dy.data<F>();
  F* op = dx.data<F>();
  std::vector<F> inv(static_cast<size_t>(T));
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) inv[size_t(t)] = rms_inverse(xp + t * d, d, eps);
  // dw first: dx may overwrite dy. Columns in fixed slices, each summed over the rows in order.
  if (dw.defined()) {
    constexpr int64_t kCols = 64;
    const int64_t slices = (d + kCols - 1) / kCols;
    F* wp = dw.data<F>();
#pragma omp parallel for schedule(static) if (T * d > (1 << 15))
    for (int64_t sl = 0; sl < slices; ++sl) {
      const int64_t c0 = sl * kCols, c1 = std::min(d, c0 + kCols);
      double acc[kCols] = {};
      for (int64_t t = 0; t < T; ++t) {
        const double r = inv[size_t(t)];
        for (int64_t i = c0; i < c1; ++i)
          acc[i - c0] += double(gp[t * d + i]) * double(xp[t * d + i]) * r;
      }
      for (int64_t i = c0; i < c1; ++i) wp[i] += F(acc[i - c0]);
    }
  }
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const F *r = xp + t * d, *g = gp + t * d;
    double c = 0;
    for (int64_t i = 0; i < d; ++i) c += double(wf[i]) * double(g[i]) * double(r[i]);
    const double ri = inv[size_t(t)];
    const F k = F(c * ri * ri * ri / double(d)), rf = inv[size_t(t)];
    F* o = op + t * d;
    for (int64_t i = 0; i < d; ++i) o[i] = rf * (wf[i] * g[i]) - k * r[i];
  }
}

// ------------------------------------------------------------------ attention
// With P = softmax(S), S = scale Q K^T (causal), O = P V and D_t = dO_t . O_t:
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - D),  dQ = scale dS K,  dK = scale dS^T Q.
// P is rebuilt from lse block by block (qblock query rows against the keys they see), the
// same blocking as the forward, so no more than qblock x T probabilities exist per thread.
// Each query head accumulates its own dK, dV (heads run in parallel); the heads sharing a KV
// head are then summed in head order.
template <class F>
void attention_backward_impl(const Tensor& q, const Tensor& K, const Tensor& V, const Tensor& out,
                             const Tensor& lse, const Tensor& dout, int64_t nh, int64_t nkv,
                             int64_t hd, const Tensor& dq, const Tensor& dK, const Tensor& dV) {
  const int64_t qw = nh * hd, kw = nkv * hd, T = q.dim(0);
  if (T == 0) return;
  const F scale = F(1) / std::sqrt(F(hd));
  const int64_t group = nh / nkv;
  const int64_t qblock = 128;
  const F *qp = q.data<F>(), *kp = K.data<F>(), *vp = V.data<F>(), *op = out.data<F>();
  const F *lp = lse.data<F>(), *gp = dout.data<F>();
  F* dqp = dq.data<F>();
  // Per query head: dK_h, dV_h (T x hd each).
  std::vector<F> dkh(size_t(nh * T * hd)), dvh(size_t(nh * T * hd));
  const bool parallel = double(nh) * double(T) * double(T) * double(hd) > double(1 << 18);
#pragma omp parallel if (parallel)
  {
    const SerialBlas one;
    std::vector<F> P, dS, D;
#pragma omp for schedule(dynamic)
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t g = h / group;
      F* dk = dkh.data() + h * T * hd;
      F* dv = dvh.data() + h * T * hd;
      std::fill_n(dk, T * hd, F(0));
      std::fill_n(dv, T * hd, F(0));
      for (int64_t t0 = 0; t0 < T; t0 += qblock) {
        const int64_t t1 = std::min(T, t0 + qblock), nq = t1 - t0, L = t1;
        const F* qb = qp + t0 * qw + h * hd;
        const F* gb = gp + t0 * qw + h * hd;
        P.resize(size_t(nq * L));
        dS.resize(size_t(nq * L));
        D.resize(size_t(nq));
        gemm_serial(CblasNoTrans, CblasTrans, nq, L, hd, scale, qb, qw, kp + g * hd, kw, F(0),
                    P.data(), L);
        for (int64_t i = 0; i < nq; ++i) {
          F* p = P.data() + i * L;
          const int64_t visible = t0 + i + 1;
          const F m = lp[h * T + t0 + i];
          for (int64_t j = 0; j < visible; ++j) p[j] = std::exp(p[j] - m);
          for (int64_t j = visible; j < L; ++j) p[j] = F(0);
          double s = 0;
          const F *o = op + (t0 + i) * qw + h * hd, *go = gb + i * qw;
          for (int64_t c = 0; c < hd; ++c) s += double(go[c]) * double(o[c]);
          D[size_t(i)] = F(s);
        }
        // dV_h[0:L] += P^T dO
        gemm_serial(CblasTrans, CblasNoTrans, L, hd, nq, F(1), P.data(), L, gb, qw, F(1), dv, hd);
        // dP = dO V^T, then dS = P (dP - D) in its place.
        gemm_serial(CblasNoTrans, CblasTrans, nq, L, hd, F(1), gb, qw, vp + g * hd, kw, F(0),
                    dS.data(), L);
        for (int64_t i = 0; i < nq; ++i) {
          const F* p = P.data() + i * L;
          F* ds = dS.data() + i * L;
          for (int64_t j = 0; j < L; ++j) ds[j] = p[j] * (ds[j] - D[size_t(i)]);
        }
        gemm_serial(CblasNoTrans, CblasNoTrans, nq, hd, L, scale, dS.data(), L, kp + g * hd, kw,
                    F(0), dqp + t0 * qw + h * hd, qw);
        gemm_serial(CblasTrans, CblasNoTrans, L, hd, nq, scale, dS.data(), L, qb, qw, F(1), dk, hd);
      }
    }
  }
  F *dKp = dK.data<F>(), *dVp = dV.data<F>();
#pragma omp parallel for collapse(2) schedule(static) if (T * kw > (1 << 15))
  for (int64_t g = 0; g < nkv; ++g)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < hd; ++c) {
        F sk = 0, sv = 0;
        for (int64_t i = 0; i < group; ++i) {
          const int64_t at = ((g * group + i) * T + t) * hd + c;
          sk += dkh[size_t(at)];
          sv += dvh[size_t(at)];
        }
        dKp[t * kw + g * hd + c] = sk;
        dVp[t * kw + g * hd + c] = sv;
      }
}

// ------------------------------------------------------------------ SwiGLU
// out = g sigma(g) u: d/du = g sigma(g), d/dg = u sigma(g) (1 + g (1 - sigma(g))).
template <class F>
void silu_mul_backward_impl(const Tensor& gate, const Tensor& up, const Tensor& dout,
                            const Tensor& dgate, const Tensor& dup) {
  const int64_t n = gate.numel();
  const F *g = gate.data<F>(), *u = up.data<F>(), *go = dout.data<F>();
  F *dg = dgate.data<F>(), *du = dup.data<F>();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const F a = g[i], b = u[i], e = go[i];
    const F sig = F(1) / (F(1) + std::exp(-a));
    du[i] = e * (a * sig);
    dg[i] = e * b * sig * (F(1) + a * (F(1) - sig));
  }
}

}  // namespace

void attention_train(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                     int64_t hd, const Tensor& out, const Tensor& lse) {
  if (q.dtype() == DType::F64)
    attention_rows<double>(q, K, V, nh, nkv, hd, 0, out, lse.data<double>());
  else
    attention_rows<float>(q, K, V, nh, nkv, hd, 0, out, lse.data<float>());
}

void attention_backward(const Tensor& q, const Tensor& K, const Tensor& V, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, int64_t nh, int64_t nkv,
                        int64_t hd, const Tensor& dq, const Tensor& dK, const Tensor& dV) {
  if (q.dtype() == DType::F64)
    attention_backward_impl<double>(q, K, V, out, lse, dout, nh, nkv, hd, dq, dK, dV);
  else
    attention_backward_impl<float>(q, K, V, out, lse, dout, nh, nkv, hd, dq, dK, dV);
}

void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                      const Tensor& dx, const Tensor& dw) {
  if (x.dtype() == DType::F64) rmsnorm_backward_impl<double>(x, w, eps, dy, dx, dw);
  else rmsnorm_backward_impl<float>(x, w, eps, dy, dx, dw);
}

void rope_backward(const Tensor& dx, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
                   bool interleaved) {
  if (dx.dtype() == DType::F64)
    rope_rotate<double>(dx, n_heads, hd, pos0, theta, interleaved, true);
  else
    rope_rotate<float>(dx, n_heads, hd, pos0, theta, interleaved, true);
}

void silu_mul_backward(const Tensor& gate, const Tensor& up, const Tensor& dout,
                       const Tensor& dgate, const Tensor& dup) {
  if (gate.dtype() == DType::F64) silu_mul_backward_impl<double>(gate, up, dout, dgate, dup);
  else silu_mul_backward_impl<float>(gate, up, dout, dgate, dup);
}

}  // namespace lrq::cpu
