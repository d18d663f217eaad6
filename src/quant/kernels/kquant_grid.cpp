// K-quant grid fitting and code assignment (the method in kquant_grid.h). Compiled with
// -ffp-contract=off (CMakeLists.txt) so that A * c - M rounds as ggml's decoders round it.
#include "quant/kernels/kquant_grid.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "quant/kernels/rtn_grid.h"

namespace lrq {

namespace {

using gguf::KQuantBlock;
using gguf::KQuantLayout;

constexpr int kSub = 32;  // the largest sub-block

// One sub-block's values and importances, gathered from the strided source.
struct Slice {
  float x[kSub];
  float w[kSub];
  int n = 0;
};

// Exact value of code c on a sub-block grid (A, M) as the decoders evaluate it.
inline float value_of(float A, float M, int c, int zero) { return A * float(c - zero) - M; }

inline int nearest_code(float x, float A, float M, int zero, int maxq) {
  if (A == 0.f) return zero;
  const float c = std::nearbyint((x + M) / A) + float(zero);
  return int(std::clamp(c, 0.f, float(maxq)));
}

double slice_error(const Slice& s, float A, float M, int zero, int maxq) {
  double e = 0;
  for (int k = 0; k < s.n; ++k) {
    const double d = double(s.x[k]) - value_of(A, M, nearest_code(s.x[k], A, M, zero, maxq), zero);
    e += double(s.w[k]) * d * d;
  }
  return e;
}

// Real (A, M) for one sub-block (step 1 of kquant_grid.h): candidate ranges, each refitted by
// weighted least squares on its codes.
void fit_sub(const KQuantLayout& l, const Slice& s, float* A_out, float* M_out) {
  const int maxq = l.maxq(), zero = l.code_zero;
  const bool mins = l.min_max > 0;
  double best = INFINITY;
  float bA = 0, bM = 0;
  auto consider = [&](float A, float M) {
    if (!std::isfinite(A) || !std::isfinite(M)) return;
    if (mins && (A < 0 || M < 0)) return;
    const double e = slice_error(s, A, M, zero, maxq);
    if (e < best) best = e, bA = A, bM = M;
  };
  // Weighted least squares of x ~ A (c - zero) - M on the codes a grid assigns (M = 0 for the
  // symmetric types; M >= 0 for the affine ones, whose grids always reach down to 0 or below).
  auto refit = [&](float A, float M) {
    double sw = 0, sc = 0, scc = 0, sx = 0, scx = 0;
    for (int k = 0; k < s.n; ++k) {
      const double c = nearest_code(s.x[k], A, M, zero, maxq) - zero, w = s.w[k];
      sw += w, sc += w * c, scc += w * c * c, sx += w * s.x[k], scx += w * c * s.x[k];
    }
    if (!mins) {
      if (scc > 0) consider(float(scx / scc), 0.f);
      return;
    }
    const double det = sw * scc - sc * sc;
    if (det > 0) {
      const double a = (sw * scx - sc * sx) / det, b = (scc * sx - sc * scx) / det;
      if (b <= 0) return consider(float(a), float(-b));
    }
    if (scc > 0) consider(float(scx / scc), 0.f);
  };
  float lo = 0, hi = 0, big = 0;
  for (int k = 0; k < s.n; ++k) {
    lo = std::min(lo, s.x[k]);
    hi = std::max(hi, s.x[k]);
    if (std::fabs(s.x[k]) > std::fabs(big)) big = s.x[k];
  }
  if (mins) {
    if (hi == lo) return *A_out = 0, *M_out = -lo, void();
    for (int t = -10; t <= 10; ++t) {
      const float A = (hi - lo) / (float(maxq) + 0.1f * float(t));
      consider(A, -lo);
      refit(A, -lo);
    }
  } else {
    if (big == 0) return *A_out = 0, *M_out = 0, void();
    // The largest magnitude on the longer (negative) side of the code range, or the other one.
    for (int t = -10; t <= 10; ++t)
      for (const float end : {-float(zero), float(maxq - zero)}) {
        const float A = big / (end + 0.1f * float(t) * (end < 0 ? -1.f : 1.f));
        consider(A, 0.f);
        refit(A, 0.f);
      }
  }
  *A_out = bA;
  *M_out = bM;
}

}  // namespace

void kquant_values(const KQuantLayout& l, const KQuantBlock& b, float* out) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  for (int j = 0; j < l.subs(); ++j) {
    const float A = d * float(b.scale[j]), M = dmin * float(b.min[j]);
    for (int k = 0; k < l.sub; ++k)
      out[j * l.sub + k] = value_of(A, M, b.code[j * l.sub + k], l.code_zero);
  }
}

void fit_kquant_superblock(const KQuantLayout& l, const float* x, int64_t stride,
                           const float* imp, KQuantBlock* b, float* S, float* O, int64_t ld) {
  const int subs = l.subs(), maxq = l.maxq(), zero = l.code_zero;
  const bool mins = l.min_max > 0;
  Slice sl[16];
  float A[16], M[16];
  for (int j = 0; j < subs; ++j) {
    Slice& s = sl[j];
    s.n = l.sub;
    double wsum = 0;
    for (int k = 0; k < l.sub; ++k) {
      const int64_t i = int64_t(j) * l.sub + k;
      s.x[k] = x[i * stride];
      s.w[k] = imp ? std::max(imp[i], 0.f) : 1.f;
      wsum += s.w[k];
    }
    if (!(wsum > 0)) std::fill_n(s.w, l.sub, 1.f);  // a dead sub-block: plain squared error
    fit_sub(l, s, &A[j], &M[j]);
  }

  // Step 2: super-scales. Affine: d = max A / scale_max, dmin = max M / min_max. Symmetric: the
  // A of largest magnitude on the scale range's longer, negative end.
  float amax = 0, mmax = 0;
  for (int j = 0; j < subs; ++j) {
    if (mins ? A[j] > amax : std::fabs(A[j]) > std::fabs(amax)) amax = A[j];
    mmax = std::max(mmax, M[j]);
  }
  const float a_end = mins ? float(l.scale_max) : float(l.scale_min);
  auto integer_grids = [&](float d, float dmin, KQuantBlock* out) {
    out->d = f32_to_f16(d);
    out->dmin = f32_to_f16(dmin);
    const float dq = f16_to_f32(out->d), mq = f16_to_f32(out->dmin);
    for (int j = 0; j < subs; ++j) {
      out->scale[j] = dq == 0.f ? 0
                                : int(std::clamp(std::nearbyint(A[j] / dq), float(l.scale_min),
                                                 float(l.scale_max)));
      out->min[j] = mq == 0.f || !mins
                        ? 0
                        : int(std::clamp(std::nearbyint(M[j] / mq), 0.f, float(l.min_max)));
    }
  };
  auto sub_error = [&](const KQuantBlock& k, int j) {
    const float d = f16_to_f32(k.d), dmin = f16_to_f32(k.dmin);
    return slice_error(sl[j], d * float(k.scale[j]), dmin * float(k.min[j]), zero, maxq);
  };
  auto block_error = [&](const KQuantBlock& k) {
    double e = 0;
    for (int j = 0; j < subs; ++j) e += sub_error(k, j);
    return e;
  };
  double best = INFINITY;
  for (const float f : {1.f, 0.97f, 1.03f, 0.94f, 1.06f, 0.9f, 1.1f}) {
    KQuantBlock k;
    integer_grids(amax * f / a_end, mmax * f / float(std::max(l.min_max, 1)), &k);
    const double e = block_error(k);
    if (e < best) {
      best = e;
      b->d = k.d;
      b->dmin = k.dmin;
      std::copy_n(k.scale, 16, b->scale);
      std::copy_n(k.min, 16, b->min);
    }
  }
  // Step 3: each sub-block's integers by -1, 0 or +1.
  for (int j = 0; j < subs; ++j) {
    const int sc0 = b->scale[j], m0 = b->min[j];
    double e0 = sub_error(*b, j);
    int bs = sc0, bm = m0;
    for (int ds = -1; ds <= 1; ++ds)
      for (int dm = mins ? -1 : 0; dm <= (mins ? 1 : 0); ++dm) {
        const int sc = sc0 + ds, m = m0 + dm;
        if (sc < l.scale_min || sc > l.scale_max || m < 0 || m > l.min_max) continue;
        b->scale[j] = sc;
        b->min[j] = m;
        const double e = sub_error(*b, j);
        if (e < e0) e0 = e, bs = sc, bm = m;
      }
    b->scale[j] = bs;
    b->min[j] = bm;
  }
  // The grids in GPTQ's form c * S + O.
  const float d = f16_to_f32(b->d), dmin = f16_to_f32(b->dmin);
  for (int j = 0; j < subs; ++j) {
    const float a = d * float(b->scale[j]), m = dmin * float(b->min[j]);
    S[j * ld] = a;
    O[j * ld] = -m - float(zero) * a;
  }
}

namespace {
const KQuantLayout& layout_or_fail(gguf::Type t, const Tensor& W, const char* where) {
  const KQuantLayout* l = gguf::kquant_layout(t);
  if (!l) fail(where, "{} is not a K-quant type", gguf::type_name(t));
  check_quantizable(W, where);
  if (!W.is_cpu()) fail(where, "K-quant grids are fitted on the CPU, got {}", W.str());
  if (W.dim(1) % gguf::kQK_K != 0)
    fail(where, "{} columns is not a multiple of the K-quants' 256-value super-blocks",
         W.dim(1));
  return *l;
}

// Codes (stored order) and the fitted numbers of every (super-block, row) into ggml blocks.
Tensor pack_blocks(const KQuantLayout& l, const uint8_t* codes, int64_t rows, int64_t cols,
                   std::vector<KQuantBlock>& fitted) {
  const int64_t nsb = cols / gguf::kQK_K;
  const size_t bb = gguf::traits(l.type).block_bytes;
  Tensor out = Tensor::empty({rows, int64_t(gguf::row_bytes(l.type, cols))}, DType::U8);
  uint8_t* o = out.data<uint8_t>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < nsb; ++s) {
      KQuantBlock& b = fitted[size_t(s * rows + r)];
      std::copy_n(codes + r * cols + s * gguf::kQK_K, gguf::kQK_K, b.code);
      gguf::pack_kquant(l, b, o + size_t(r) * size_t(nsb) * bb + size_t(s) * bb);
    }
  return out;
}
}  // namespace

Tensor kquant_rtn(const Tensor& W, gguf::Type type, const Tensor& importance) {
  const char* where = "rtn";
  const KQuantLayout& l = layout_or_fail(type, W, where);
  const int64_t rows = W.dim(0), cols = W.dim(1), nsb = cols / gguf::kQK_K;
  const std::vector<float> imp = importance.defined()
                                     ? importance_vector(importance, cols, where)
                                     : std::vector<float>();
  std::vector<KQuantBlock> fitted(size_t(nsb * rows));
  Tensor codes = Tensor::empty({rows, cols}, DType::U8);
  const float* w = W.data<float>();
  uint8_t* c = codes.data<uint8_t>();
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < nsb; ++s) {
      const float* x = w + r * cols + s * gguf::kQK_K;
      float S[16], O[16];
      KQuantBlock& b = fitted[size_t(s * rows + r)];
      fit_kquant_superblock(l, x, 1, imp.empty() ? nullptr : imp.data() + s * gguf::kQK_K, &b, S,
                            O);
      for (int64_t k = 0; k < gguf::kQK_K; ++k)
        c[r * cols + s * gguf::kQK_K + k] =
            uint8_t(quantize_code(x[k], S[k / l.sub], O[k / l.sub], float(l.maxq())));
    }
  return pack_blocks(l, c, rows, cols, fitted);
}

Tensor kquant_gptq(const Tensor& W, const Tensor& H, gguf::Type type, const GptqOptions& opt,
                   const GptqFactor* factor, GptqResult* res) {
  const KQuantLayout& l = layout_or_fail(type, W, "gptq");
  const int64_t rows = W.dim(0), cols = W.dim(1);
  std::vector<KQuantBlock> fitted(size_t(cols / gguf::kQK_K * rows));
  GptqGrids grids;
  grids.group = l.sub;
  grids.span = gguf::kQK_K;
  grids.maxq = l.maxq();
  grids.fit = [&](const float* w, int64_t ld, int64_t count, int64_t c0, int64_t r0,
                  const float* imp, float* S, float* O) {
    for (int64_t r = 0; r < count; ++r)
      fit_kquant_superblock(l, w + r, ld, imp, &fitted[size_t(c0 / gguf::kQK_K * rows + r0 + r)],
                            S + r, O + r, ld);
  };
  const Tensor codes = gptq_assign(W, H, opt, factor, grids, res);
  return pack_blocks(l, codes.data<uint8_t>(), rows, cols, fitted);
}

}  // namespace lrq
