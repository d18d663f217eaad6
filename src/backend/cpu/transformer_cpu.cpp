// The transformer's own primitives on the CPU: mixed-dtype linear, RMSNorm, RoPE, attention,
// SwiGLU. All activations are F32; weights may be F32/F16/BF16 as stored in the checkpoint.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
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

void rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) {
  const int64_t d = x.dim(-1), T = x.numel() / d;
  std::vector<float> wf(d);
  convert_to_f32(w.raw(), w.dtype(), wf.data(), size_t(d));
  const float* xp = x.data<float>();
  float* op = out.data<float>();
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const float* r = xp + t * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(r[i]) * r[i];
    float inv = 1.0f / std::sqrt(float(ss / double(d)) + eps);
    float* o = op + t * d;
    for (int64_t i = 0; i < d; ++i) o[i] = wf[i] * (r[i] * inv);
  }
}

void rope(const Tensor& x, int64_t n_heads, int64_t hd, int64_t pos0, float theta,
          bool interleaved) {
  const int64_t width = x.dim(-1), T = x.numel() / width;
  const int64_t half = hd / 2;
  // Frequencies as Hugging Face computes them (float32 throughout), so logits match to rounding.
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = 1.0f / std::pow(theta, float(2 * i) / float(hd));
  float* xp = x.data<float>();
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> c(half), s(half);
    for (int64_t i = 0; i < half; ++i) {
      float a = float(pos0 + t) * inv_freq[i];
      c[i] = std::cos(a);
      s[i] = std::sin(a);
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = xp + t * width + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        float x0 = v[a], x1 = v[b];
        v[a] = x0 * c[i] - x1 * s[i];
        v[b] = x1 * c[i] + x0 * s[i];
      }
    }
  }
}

void attention(const Tensor& q, const Tensor& K, const Tensor& V, int64_t nh, int64_t nkv,
               int64_t hd, int64_t pos0, const Tensor& out) {
  const int64_t qw = nh * hd, kw = nkv * hd, T = q.numel() / qw;
  const float scale = 1.0f / std::sqrt(float(hd));
  const int64_t group = nh / nkv;
  const int64_t qblock = 128;  // bounds the score buffer at qblock x context per thread
  const int64_t nqb = (T + qblock - 1) / qblock;
  const float *qp = q.data<float>(), *kp = K.data<float>(), *vp = V.data<float>();
  float* op = out.data<float>();
#pragma omp parallel
  {
    const SerialBlas one;
    std::vector<float> S;
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t b = 0; b < nqb; ++b) {
        const int64_t t0 = b * qblock, t1 = std::min(T, t0 + qblock), nq = t1 - t0;
        const int64_t L = pos0 + t1;  // keys visible to the last query of the block
        const int64_t g = h / group;
        S.resize(size_t(nq * L));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, L, hd, scale,
                    qp + t0 * qw + h * hd, qw, kp + g * hd, kw, 0.0f, S.data(), L);
        for (int64_t i = 0; i < nq; ++i) {
          float* s = S.data() + i * L;
          const int64_t visible = pos0 + t0 + i + 1;
          float mx = -INFINITY;
          for (int64_t j = 0; j < visible; ++j) mx = std::max(mx, s[j]);
          float sum = 0;
          for (int64_t j = 0; j < visible; ++j) sum += (s[j] = std::exp(s[j] - mx));
          const float inv = 1.0f / sum;
          for (int64_t j = 0; j < visible; ++j) s[j] *= inv;
          for (int64_t j = visible; j < L; ++j) s[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, L, 1.0f, S.data(), L,
                    vp + g * hd, kw, 0.0f, op + t0 * qw + h * hd, qw);
      }
  }
}

void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const int64_t n = gate.numel();
  const float *g = gate.data<float>(), *u = up.data<float>();
  float* o = out.data<float>();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void add_inplace(const Tensor& x, const Tensor& y) {
  const int64_t n = x.numel();
  float* a = x.data<float>();
  const float* b = y.data<float>();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
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
