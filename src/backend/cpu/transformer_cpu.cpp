// The transformer's own primitives on the CPU: mixed-dtype linear, RMSNorm, RoPE, attention,
// SwiGLU. Activations are F32 (F64 for the pieces a gradient check differentiates: RMSNorm,
// RoPE, attention, SwiGLU, residual adds); weights may be F32/F16/BF16 as stored in the
// checkpoint. The F64 forms are the same templates as the F32 ones, so the F32 results are
// what they were before F64 existed.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/transformer_cpu.h"
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace lrq::cpu {
namespace {


// Dot product of an F32 vector with a 16-bit weight row, widening on the fly.
float dot_w16(const float* x, const uint16_t* w, int64_t n, DType wt) {
  int64_t i = 0;
  float acc = 0;
#if defined(__AVX2__) && defined(__F16C__)
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  if (wt == DType::BF16) {
    for (; i + 16 <= n; i += 16) {
      __m256i a = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(w + i)));
      __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(w + i + 8)));
      s0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(a, 16)), _mm256_loadu_ps(x + i), s0);
      s1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(b, 16)), _mm256_loadu_ps(x + i + 8), s1);
    }
  } else {
    for (; i + 16 <= n; i += 16) {
      s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w + i))), _mm256_loadu_ps(x + i), s0);
      s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(w + i + 8))), _mm256_loadu_ps(x + i + 8), s1);
    }
  }
  s0 = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  h = _mm_hadd_ps(h, h);
  h = _mm_hadd_ps(h, h);
  acc = _mm_cvtss_f32(h);
#endif
  for (; i < n; ++i) acc += x[i] * (wt == DType::BF16 ? bf16_to_f32(w[i]) : f16_to_f32(w[i]));
  return acc;
}

// The rotary inverse frequencies: in F32 as Hugging Face computes them (float32 throughout), so
// logits match to rounding; in F64 the same formula without rounding.
template <class F>
F rope_inv_freq(float theta, int64_t i, int64_t hd) {
  if constexpr (std::is_same_v<F, float>)
    return 1.0f / std::pow(theta, float(2 * i) / float(hd));
  else
    return 1.0 / std::pow(double(theta), double(2 * i) / double(hd));
}

}  // namespace

void linear(const Tensor& x, const Tensor& W, const Tensor& y) {
  const int64_t out = W.dim(0), in = W.dim(1), T = x.numel() / std::max<int64_t>(in, 1);
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  if (T == 0 || out == 0) return;
  if (W.dtype() == DType::F32) {
    gemm_rm<float>(false, true, T, out, in, 1.0f, xp, in, W.data<float>(), in, 0.0f, yp, out);
    return;
  }
  const uint16_t* wp = static_cast<const uint16_t*>(W.raw());
  if (T <= 4) {  // decode: memory-bound, read each weight once and widen in registers
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t t = 0; t < T; ++t) yp[t * out + o] = dot_w16(xp + t * in, wp + o * in, in, W.dtype());
    return;
  }
  // Prefill: widen a slab of rows per thread and multiply it with (always single-threaded)
  // BLAS, so the F32 copy never exceeds a slab.
  const int64_t slab = 64;
  const int64_t nslabs = (out + slab - 1) / slab;
#pragma omp parallel
  {
    const SerialBlas one;
    std::vector<float> buf(size_t(slab * in));
#pragma omp for schedule(dynamic)
    for (int64_t s = 0; s < nslabs; ++s) {
      int64_t r0 = s * slab, r1 = std::min(out, r0 + slab);
      convert_to_f32(wp + r0 * in, W.dtype(), buf.data(), size_t((r1 - r0) * in));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, r1 - r0, in, 1.0f, xp, in,
                  buf.data(), in, 0.0f, yp + r0, out);
    }
  }
}

template <class F>
std::vector<F> weights_as(const Tensor& w) {
  const int64_t d = w.numel();
  std::vector<F> out(static_cast<size_t>(d));
  if constexpr (std::is_same_v<F, float>) {
    convert_to_f32(w.raw(), w.dtype(), out.data(), size_t(d));
  } else if (w.dtype() == DType::F64) {
    std::copy_n(w.data<double>(), d, out.data());
  } else {
    std::vector<float> wf(static_cast<size_t>(d));
    convert_to_f32(w.raw(), w.dtype(), wf.data(), size_t(d));
    std::copy(wf.begin(), wf.end(), out.begin());
  }
  return out;
}
template std::vector<float> weights_as<float>(const Tensor&);
template std::vector<double> weights_as<double>(const Tensor&);

namespace {
template <class F>
void rmsnorm_impl(const Tensor& x, const Tensor& w, float eps, const Tensor& out) {
  const int64_t d = x.dim(-1), T = x.numel() / d;
  const std::vector<F> wf = weights_as<F>(w);
  const F* xp = x.data<F>();
  F* op = out.data<F>();
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const F* r = xp + t * d;
    const F inv = rms_inverse(r, d, eps);
    F* o = op + t * d;
    for (int64_t i = 0; i < d; ++i) o[i] = wf[i] * (r[i] * inv);
  }
}
}  // namespace

void rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) {
  if (x.dtype() == DType::F64) rmsnorm_impl<double>(x, w, eps, out);
  else rmsnorm_impl<float>(x, w, eps, out);
}

template <class F>
void rope_rotate(const Tensor& x, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
                 bool interleaved, bool inverse) {
  const int64_t width = x.dim(-1), T = x.numel() / width;
  const int64_t half = hd / 2;
  std::vector<F> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = rope_inv_freq<F>(theta, i, hd);
  F* xp = x.data<F>();
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    std::vector<F> c(half), s(half);
    for (int64_t i = 0; i < half; ++i) {
      F a = F(pos0 + t) * inv_freq[i];
      c[i] = std::cos(a);
      s[i] = std::sin(a);
      // The transpose of a rotation is the rotation by the opposite angle: negating the sine
      // (exact) keeps the forward's arithmetic below unchanged.
      if (inverse) s[i] = -s[i];
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      F* v = xp + t * width + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        F x0 = v[a], x1 = v[b];
        v[a] = x0 * c[i] - x1 * s[i];
        v[b] = x1 * c[i] + x0 * s[i];
      }
    }
  }
}
template void rope_rotate<float>(const Tensor&, int64_t, int64_t, int64_t, float, bool, bool);
template void rope_rotate<double>(const Tensor&, int64_t, int64_t, int64_t, float, bool, bool);

void rope(const Tensor& x, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
          bool interleaved) {
  if (x.dtype() == DType::F64) rope_rotate<double>(x, n_heads, hd, pos0, theta, interleaved, false);
  else rope_rotate<float>(x, n_heads, hd, pos0, theta, interleaved, false);
}

template <class F>
void attention_rows(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
                    int64_t hd, int64_t pos0, const Tensor& out, F* lse) {
  const int64_t qw = nh * hd, kw = nkv * hd, T = q.numel() / qw;
  const F scale = F(1) / std::sqrt(F(hd));
  const int64_t group = nh / nkv;
  const int64_t qblock = 128;  // bounds the score buffer at qblock x context per thread
  const int64_t nqb = (T + qblock - 1) / qblock;
  const F *qp = q.data<F>(), *kp = K.data<F>(), *vp = V.data<F>();
  F* op = out.data<F>();
  // Small problems (decode steps, gradient checks) run on the calling thread: a parallel region
  // costs more than their work. Each (head, block) is computed alike either way.
  const bool parallel = double(nh) * double(T) * double(pos0 + T) * double(hd) > double(1 << 18);
#pragma omp parallel if (parallel)
  {
    const SerialBlas one;
    std::vector<F> S;
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t b = 0; b < nqb; ++b) {
        const int64_t t0 = b * qblock, t1 = std::min(T, t0 + qblock), nq = t1 - t0;
        const int64_t L = pos0 + t1;  // keys visible to the last query of the block
        const int64_t g = h / group;
        S.resize(size_t(nq * L));
        gemm_serial(CblasNoTrans, CblasTrans, nq, L, hd, scale, qp + t0 * qw + h * hd, qw,
                    kp + g * hd, kw, F(0), S.data(), L);
        for (int64_t i = 0; i < nq; ++i) {
          F* s = S.data() + i * L;
          const int64_t visible = pos0 + t0 + i + 1;
          F mx = -INFINITY;
          for (int64_t j = 0; j < visible; ++j) mx = std::max(mx, s[j]);
          F sum = 0;
          for (int64_t j = 0; j < visible; ++j) sum += (s[j] = std::exp(s[j] - mx));
          const F inv = F(1) / sum;
          for (int64_t j = 0; j < visible; ++j) s[j] *= inv;
          for (int64_t j = visible; j < L; ++j) s[j] = F(0);
          if (lse) lse[h * T + t0 + i] = mx + std::log(sum);
        }
        gemm_serial(CblasNoTrans, CblasNoTrans, nq, hd, L, F(1), S.data(), L, vp + g * hd, kw,
                    F(0), op + t0 * qw + h * hd, qw);
      }
  }
}
template void attention_rows<float>(const Tensor&, const Tensor&, const Tensor&, int64_t,
                                    int64_t, int64_t, int64_t, const Tensor&, float*);
template void attention_rows<double>(const Tensor&, const Tensor&, const Tensor&, int64_t,
                                     int64_t, int64_t, int64_t, const Tensor&, double*);

void attention(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
               int64_t hd, int64_t pos0, const Tensor& out) {
  if (q.dtype() == DType::F64)
    attention_rows<double>(q, K, V, nh, nkv, hd, pos0, out, nullptr);
  else
    attention_rows<float>(q, K, V, nh, nkv, hd, pos0, out, nullptr);
}

namespace {
template <class F>
void silu_mul_impl(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const int64_t n = gate.numel();
  const F *g = gate.data<F>(), *u = up.data<F>();
  F* o = out.data<F>();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (F(1) + std::exp(-g[i])) * u[i];
}

template <class F>
void add_impl(const Tensor& x, const Tensor& y) {
  const int64_t n = x.numel();
  F* a = x.data<F>();
  const F* b = y.data<F>();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}
}  // namespace

void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  if (gate.dtype() == DType::F64) silu_mul_impl<double>(gate, up, out);
  else silu_mul_impl<float>(gate, up, out);
}

void add_inplace(const Tensor& x, const Tensor& y) {
  if (x.dtype() == DType::F64) add_impl<double>(x, y);
  else add_impl<float>(x, y);
}

void add_row_vector(const Tensor& x, const Tensor& b) {
  const int64_t d = x.dim(-1), T = x.numel() / d;
  std::vector<float> bf(d);
  convert_to_f32(b.raw(), b.dtype(), bf.data(), size_t(d));
  float* p = x.data<float>();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < d; ++i) p[t * d + i] += bf[i];
}

void embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) {
  const int64_t d = table.dim(1);
  const size_t es = dtype_size(table.dtype());
  for (size_t t = 0; t < ids.size(); ++t)
    convert_to_f32(static_cast<const char*>(table.raw()) + size_t(ids[t]) * d * es,
                   table.dtype(), out.data<float>() + t * d, size_t(d));
}

// The CPU has no shared-input fast path: each projection is its own product (through the
// dispatch, so each pair's devices are checked).
void linear_many(const Tensor& x, std::span<const Tensor> W, std::span<const Tensor> y) {
  for (size_t i = 0; i < W.size(); ++i) ops::linear(x, W[i], y[i]);
}

}  // namespace lrq::cpu
