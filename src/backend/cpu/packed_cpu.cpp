// The packed ops on the CPU (backend/op_list.h): encode, decode, dequantize and the fused
// decode-and-dot matmul, as portable scalar kernels plus AVX2 ones (formats/packed_weight.h
// documents the bit layout).
//
// matmul uses, per group, sum_j (c_j s + o) x_j = s * sum_j c_j x_j + o * sum_j x_j (symmetric:
// o = -2^(b-1) s; codebook: s * sum_j book[c_j] x_j), so the inner loop is one integer decode,
// one conversion and one FMA per weight, and the group sums of x are computed once per call.
// The two terms partly cancel when x has a large mean; the error stays a small multiple of
// fp32 rounding of sum_j |w_j x_j| (tested), and skipping the centring of the codes makes the
// compute-bound T = 1 kernel about 13% faster on the dev box.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "backend/cpu/cpu_ops.h"

// The AVX2 kernels exist on x86 only; elsewhere (aarch64) the portable kernels run.
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define LRQ_X86 1
#endif

namespace lrq::cpu {

using ops::PackedFormat;

namespace {

constexpr int64_t kChunk = ops::kPackedChunk;
constexpr int64_t kGemvMaxT = 8;    // above this, matmul dequantizes slabs and calls gemm
constexpr int64_t kSlabBytes = 2 << 20;  // fp32 slab size for the gemm path

std::atomic<bool> g_force_scalar{false};

bool cpu_has_avx2() {
#if defined(LRQ_X86)
  // F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports has no "f16c".
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
  }();
  return ok;
#else
  return false;
#endif
}

bool use_simd() { return cpu_has_avx2() && !g_force_scalar.load(std::memory_order_relaxed); }

// ------------------------------------------------------------------ scalar chunk codec
inline void encode_chunk(const uint8_t* c, int bits, uint8_t* p) {
  switch (bits) {
    case 8:
      std::memcpy(p, c, 32);
      return;
    case 4:
      for (int k = 0; k < 16; ++k) p[k] = uint8_t(c[k] | c[k + 16] << 4);
      return;
    case 3:  // value j + 8q at bit 12j + 3q of the chunk's 96-bit little-endian integer
      std::memset(p, 0, 12);
      for (int j = 0; j < 8; ++j) {
        uint32_t field = 0;
        for (int q = 0; q < 4; ++q) field |= uint32_t(c[j + 8 * q] & 7) << 3 * q;
        field <<= 12 * j % 8;
        p[12 * j / 8] = uint8_t(p[12 * j / 8] | field);
        p[12 * j / 8 + 1] = uint8_t(p[12 * j / 8 + 1] | field >> 8);
      }
      return;
    default:  // 2
      for (int k = 0; k < 8; ++k)
        p[k] = uint8_t((c[k] & 3) | (c[k + 8] & 3) << 2 | (c[k + 16] & 3) << 4 | (c[k + 24] & 3) << 6);
  }
}

inline void decode_chunk(const uint8_t* p, int bits, uint8_t* c) {
  switch (bits) {
    case 8:
      std::memcpy(c, p, 32);
      return;
    case 4:
      for (int k = 0; k < 16; ++k) {
        c[k] = p[k] & 15;
        c[k + 16] = p[k] >> 4;
      }
      return;
    case 3:
      for (int j = 0; j < 8; ++j) {
        const uint32_t field = (uint32_t(p[12 * j / 8]) | uint32_t(p[12 * j / 8 + 1]) << 8) >> 12 * j % 8;
        for (int q = 0; q < 4; ++q) c[j + 8 * q] = uint8_t(field >> 3 * q & 7);
      }
      return;
    default:  // 2
      for (int k = 0; k < 8; ++k)
        for (int q = 0; q < 4; ++q) c[k + 8 * q] = p[k] >> 2 * q & 3;
  }
}

// Everything a row kernel needs, resolved once per call.
struct Plan {
  const uint8_t* codes;
  int64_t row_bytes, cols, ngroups, chunks_per_group;
  int bits;
  PackedFormat format;
  const uint16_t* scales;   // F16 [rows, ngroups]
  const uint16_t* offsets;  // F16 [rows, ngroups] or null
  const float* codebook;    // [2^bits] or null
};

Plan make_plan(const Packed& w) {
  return Plan{w.codes.data<uint8_t>(), w.codes.dim(1), w.cols(), w.ngroups(),
              w.group / kChunk, w.bits, w.format, w.scales.data<uint16_t>(),
              w.offsets.defined() ? w.offsets.data<uint16_t>() : nullptr,
              w.codebook.defined() ? w.codebook.data<float>() : nullptr};
}

// Per-row fp32 scales and offsets (affine: stored; symmetric: -2^(b-1) s; codebook: none).
void row_scales(const Plan& p, int64_t r, float* sc, float* off) {
  if (!p.scales) {  // a LoRDS row: codebook values alone, its scales come from B A
    sc[0] = 1.f;
    return;
  }
  convert_to_f32(p.scales + r * p.ngroups, DType::F16, sc, size_t(p.ngroups));
  if (p.offsets) {
    convert_to_f32(p.offsets + r * p.ngroups, DType::F16, off, size_t(p.ngroups));
  } else if (p.format == PackedFormat::Symmetric) {
    const float m = float(1 << (p.bits - 1));
    for (int64_t g = 0; g < p.ngroups; ++g) off[g] = -m * sc[g];
  }
}

// ------------------------------------------------------------------ portable kernels
// Templated on the bit width so decode_chunk folds to straight-line code the compiler can
// vectorize for whatever the target has (NEON on aarch64).
template <int B>
void dequant_row_scalar(const Plan& p, int64_t r, float* sc, float* off, float* out) {
  row_scales(p, r, sc, off);
  const uint8_t* src = p.codes + r * p.row_bytes;
  const int m = 1 << (B - 1);
  uint8_t c[kChunk];
  for (int64_t g = 0; g < p.ngroups; ++g)
    for (int64_t ch = 0; ch < p.chunks_per_group; ++ch, src += 4 * B, out += kChunk) {
      decode_chunk(src, B, c);
      for (int k = 0; k < kChunk; ++k)
        switch (p.format) {
          case PackedFormat::Affine: out[k] = float(c[k]) * sc[g] + off[g]; break;
          case PackedFormat::Symmetric: out[k] = float(int(c[k]) - m) * sc[g]; break;
          case PackedFormat::Codebook: out[k] = p.codebook[c[k]] * sc[g]; break;
        }
    }
}

// out[t] = row r of W times x[t] for t < nt. Per-lane partial sums (reduced once per group)
// keep every inner loop free of cross-iteration dependencies, so it vectorizes.
template <int B, bool LUT>
void dot_row_scalar(const Plan& p, int64_t r, const float* x, int64_t nt, const float* xsum,
                    float* sc, float* off, float* out) {
  row_scales(p, r, sc, off);
  const uint8_t* src = p.codes + r * p.row_bytes;
  uint8_t c[kChunk];
  float v[kChunk], acc[kGemvMaxT][kChunk];
  for (int64_t t = 0; t < nt; ++t) out[t] = 0;
  for (int64_t g = 0, col = 0; g < p.ngroups; ++g) {
    for (int64_t t = 0; t < nt; ++t) std::fill_n(acc[t], kChunk, 0.f);
    for (int64_t ch = 0; ch < p.chunks_per_group; ++ch, src += 4 * B, col += kChunk) {
      decode_chunk(src, B, c);
      for (int k = 0; k < kChunk; ++k) v[k] = LUT ? p.codebook[c[k]] : float(c[k]);
      for (int64_t t = 0; t < nt; ++t) {
        const float* xt = x + t * p.cols + col;
        for (int k = 0; k < kChunk; ++k) acc[t][k] += v[k] * xt[k];
      }
    }
    for (int64_t t = 0; t < nt; ++t) {
      float s = 0;
      for (int k = 0; k < kChunk; ++k) s += acc[t][k];
      out[t] += sc[g] * s;
      if (!LUT) out[t] += off[g] * xsum[t * p.ngroups + g];
    }
  }
}

using DequantRowFn = void (*)(const Plan&, int64_t, float*, float*, float*);
using DotRowFn = void (*)(const Plan&, int64_t, const float*, int64_t, const float*, float*,
                          float*, float*);

// pick(std::integral_constant<int, B>) for the code width B, so a kernel table is one line per
// kernel family instead of one switch each.
template <class Pick>
auto by_bits(int bits, Pick pick) {
  switch (bits) {
    case 2: return pick(std::integral_constant<int, 2>{});
    case 3: return pick(std::integral_constant<int, 3>{});
    case 4: return pick(std::integral_constant<int, 4>{});
    default: return pick(std::integral_constant<int, 8>{});
  }
}

DequantRowFn dequant_fn_scalar(int bits) {
  return by_bits(bits, [](auto b) -> DequantRowFn { return dequant_row_scalar<b.value>; });
}

DotRowFn dot_fn_scalar(const Plan& p) {
  const bool lut = p.format == PackedFormat::Codebook;
  return by_bits(p.bits, [lut](auto b) -> DotRowFn {
    constexpr int B = decltype(b)::value;
    return lut ? dot_row_scalar<B, true> : dot_row_scalar<B, false>;
  });
}

// ------------------------------------------------------------------ AVX2 kernels
#if defined(LRQ_X86)
#define LRQ_AVX2 __attribute__((target("avx2,fma,f16c")))

// Codes of one chunk as four vectors of 8 int32 (values 0-7, 8-15, 16-23, 24-31). Bytes are
// zero-extended straight from memory, so every lane holds one byte and the fields are cut out
// with 32-bit shifts and masks (one shuffle per 8 bytes).
LRQ_AVX2 inline __m256i bytes8(const uint8_t* q) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)));
}

template <int B>
LRQ_AVX2 inline void decode_chunk_avx2(const uint8_t* p, __m256i v[4]) {
  if constexpr (B == 8) {
    for (int q = 0; q < 4; ++q) v[q] = bytes8(p + 8 * q);
  } else if constexpr (B == 4) {
    const __m256i mask = _mm256_set1_epi32(15), a = bytes8(p), b = bytes8(p + 8);
    v[0] = _mm256_and_si256(a, mask);
    v[1] = _mm256_and_si256(b, mask);
    v[2] = _mm256_srli_epi32(a, 4);
    v[3] = _mm256_srli_epi32(b, 4);
  } else if constexpr (B == 3) {
    // Lane j takes bytes 3j/2 and 3j/2 + 1 (the 12 bits of values j, j+8, j+16, j+24 start at
    // bit 12j), shifted right by 4 for odd j. The 12-byte chunk is read as 8 + 4 bytes so
    // nothing past it is touched.
    uint32_t tail;
    std::memcpy(&tail, p + 8, 4);
    const __m128i raw = _mm_insert_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), int(tail), 2);
    const __m256i pick = _mm256_setr_epi8(0, 1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1, 4, 5, -1, -1,
                                          6, 7, -1, -1, 7, 8, -1, -1, 9, 10, -1, -1, 10, 11, -1, -1);
    const __m256i a = _mm256_srlv_epi32(_mm256_shuffle_epi8(_mm256_broadcastsi128_si256(raw), pick),
                                        _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
    const __m256i mask = _mm256_set1_epi32(7);
    v[0] = _mm256_and_si256(a, mask);
    v[1] = _mm256_and_si256(_mm256_srli_epi32(a, 3), mask);
    v[2] = _mm256_and_si256(_mm256_srli_epi32(a, 6), mask);
    v[3] = _mm256_and_si256(_mm256_srli_epi32(a, 9), mask);
  } else {
    const __m256i mask = _mm256_set1_epi32(3), a = bytes8(p);
    v[0] = _mm256_and_si256(a, mask);
    v[1] = _mm256_and_si256(_mm256_srli_epi32(a, 2), mask);
    v[2] = _mm256_and_si256(_mm256_srli_epi32(a, 4), mask);
    v[3] = _mm256_srli_epi32(a, 6);
  }
}

// codebook[v] for 8 codes; the codebook is preloaded as two 8-float registers (lo, hi).
template <int B>
LRQ_AVX2 inline __m256 lookup_avx2(__m256i v, __m256 lo, __m256 hi, const float* cb) {
  if constexpr (B <= 3) {
    return _mm256_permutevar8x32_ps(lo, v);
  } else if constexpr (B == 4) {
    const __m256 upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(v, _mm256_set1_epi32(7)));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, v), _mm256_permutevar8x32_ps(hi, v), upper);
  } else {
    return _mm256_i32gather_ps(cb, v, 4);
  }
}

LRQ_AVX2 inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

struct CodebookRegs {
  __m256 lo, hi;
};

LRQ_AVX2 inline CodebookRegs load_codebook(const Plan& p) {
  alignas(32) float t[16] = {};
  if (p.codebook) std::memcpy(t, p.codebook, sizeof(float) * std::min(16, 1 << p.bits));
  return {_mm256_load_ps(t), _mm256_load_ps(t + 8)};
}

template <int B, PackedFormat F>
LRQ_AVX2 void dequant_row_avx2(const Plan& p, int64_t r, float* sc, float* off, float* out) {
  row_scales(p, r, sc, off);
  const uint8_t* src = p.codes + r * p.row_bytes;
  const CodebookRegs cb = load_codebook(p);
  const __m256i centre = _mm256_set1_epi32(1 << (B - 1));
  __m256i v[4];
  for (int64_t g = 0; g < p.ngroups; ++g) {
    const __m256 s = _mm256_set1_ps(sc[g]);
    const __m256 o = _mm256_set1_ps(F == PackedFormat::Affine ? off[g] : 0.f);
    for (int64_t ch = 0; ch < p.chunks_per_group; ++ch, src += 4 * B, out += kChunk) {
      decode_chunk_avx2<B>(src, v);
      for (int q = 0; q < 4; ++q) {
        __m256 w;
        if constexpr (F == PackedFormat::Affine)
          w = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v[q]), s, o);
        else if constexpr (F == PackedFormat::Symmetric)
          w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(v[q], centre)), s);
        else
          w = _mm256_mul_ps(lookup_avx2<B>(v[q], cb.lo, cb.hi, p.codebook), s);
        _mm256_storeu_ps(out + 8 * q, w);
      }
    }
  }
}

// out[t] = row r of W times x[t], t < NT; codes are decoded once and reused for all NT inputs.
template <int B, bool LUT, int NT>
LRQ_AVX2 void dot_row_avx2(const Plan& p, int64_t r, const float* x, const float* xsum,
                           const float* sc, const float* off, const CodebookRegs& cb,
                           float* out) {
  // Independent accumulator chains hide the FMA latency: at least 4 in flight per row.
  constexpr int A = NT == 1 ? 4 : 2;
  const uint8_t* src = p.codes + r * p.row_bytes;
  float res[NT] = {};
  __m256i v[4];
  for (int64_t g = 0, col = 0; g < p.ngroups; ++g) {
    __m256 acc[NT][A];
    for (int t = 0; t < NT; ++t)
      for (int a = 0; a < A; ++a) acc[t][a] = _mm256_setzero_ps();
    for (int64_t ch = 0; ch < p.chunks_per_group; ++ch, src += 4 * B, col += kChunk) {
      decode_chunk_avx2<B>(src, v);
      for (int q = 0; q < 4; ++q) {
        const __m256 w = LUT ? lookup_avx2<B>(v[q], cb.lo, cb.hi, p.codebook)
                             : _mm256_cvtepi32_ps(v[q]);
        for (int t = 0; t < NT; ++t)
          acc[t][q % A] =
              _mm256_fmadd_ps(w, _mm256_loadu_ps(x + t * p.cols + col + 8 * q), acc[t][q % A]);
      }
    }
    for (int t = 0; t < NT; ++t) {
      __m256 sum = acc[t][0];
      for (int a = 1; a < A; ++a) sum = _mm256_add_ps(sum, acc[t][a]);
      res[t] += sc[g] * hsum_avx2(sum);
      if constexpr (!LUT) res[t] += off[g] * xsum[t * p.ngroups + g];
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = res[t];
}

template <int B, bool LUT>
LRQ_AVX2 void dot_row_avx2_any(const Plan& p, int64_t r, const float* x, int64_t nt,
                               const float* xsum, float* sc, float* off, float* out) {
  row_scales(p, r, sc, off);
  const CodebookRegs cb = load_codebook(p);
  // Four inputs at a time keep accumulators + decoded codes within the 16 ymm registers.
  for (int64_t t0 = 0; t0 < nt; t0 += 4) {
    const float* xt = x + t0 * p.cols;
    const float* st = xsum + t0 * p.ngroups;
    switch (std::min<int64_t>(4, nt - t0)) {
      case 1: dot_row_avx2<B, LUT, 1>(p, r, xt, st, sc, off, cb, out + t0); break;
      case 2: dot_row_avx2<B, LUT, 2>(p, r, xt, st, sc, off, cb, out + t0); break;
      case 3: dot_row_avx2<B, LUT, 3>(p, r, xt, st, sc, off, cb, out + t0); break;
      default: dot_row_avx2<B, LUT, 4>(p, r, xt, st, sc, off, cb, out + t0); break;
    }
  }
}

template <int B>
DequantRowFn dequant_fn_bits(PackedFormat f) {
  switch (f) {
    case PackedFormat::Affine: return dequant_row_avx2<B, PackedFormat::Affine>;
    case PackedFormat::Symmetric: return dequant_row_avx2<B, PackedFormat::Symmetric>;
    case PackedFormat::Codebook: return dequant_row_avx2<B, PackedFormat::Codebook>;
  }
  return nullptr;
}

DequantRowFn dequant_fn_avx2(const Plan& p) {
  return by_bits(p.bits, [&p](auto b) { return dequant_fn_bits<b.value>(p.format); });
}

DotRowFn dot_fn_avx2(const Plan& p) {
  const bool lut = p.format == PackedFormat::Codebook;
  return by_bits(p.bits, [lut](auto b) -> DotRowFn {
    constexpr int B = decltype(b)::value;
    return lut ? dot_row_avx2_any<B, true> : dot_row_avx2_any<B, false>;
  });
}
#endif  // LRQ_X86

DequantRowFn dequant_fn(const Plan& p) {
#if defined(LRQ_X86)
  if (use_simd()) return dequant_fn_avx2(p);
#endif
  return dequant_fn_scalar(p.bits);
}

DotRowFn dot_fn(const Plan& p) {
#if defined(LRQ_X86)
  if (use_simd()) return dot_fn_avx2(p);
#endif
  return dot_fn_scalar(p);
}

// Rows [begin, end) of the plan's matrix into out ((end - begin) * cols values); each row is
// decoded by one thread alone, so the values do not depend on the thread count.
void dequant_rows(const Plan& p, int64_t begin, int64_t end, float* out) {
  const DequantRowFn fn = dequant_fn(p);
#pragma omp parallel
  {
    std::vector<float> sc(size_t(p.ngroups)), off(size_t(p.ngroups));
#pragma omp for schedule(static)
    for (int64_t r = begin; r < end; ++r)
      fn(p, r, sc.data(), off.data(), out + (r - begin) * p.cols);
  }
}

}  // namespace

void packed_force_scalar(bool on) { g_force_scalar.store(on); }
bool packed_simd_active() { return use_simd(); }

PackedEncodeResult packed_encode(const Tensor& codes, int bits, const Tensor& packed) {
  const uint8_t* c = codes.data<uint8_t>();
  const int64_t n = codes.numel();
  for (int64_t i = 0; i < n; ++i)
    if (c[i] >> bits) return {i, c[i]};
  uint8_t* p = packed.data<uint8_t>();
  for (int64_t i = 0, chunks = n / kChunk; i < chunks; ++i)
    encode_chunk(c + i * kChunk, bits, p + i * 4 * bits);
  return {};
}

void packed_decode(const Tensor& packed, int bits, const Tensor& codes) {
  const uint8_t* p = packed.data<uint8_t>();
  uint8_t* c = codes.data<uint8_t>();
  for (int64_t i = 0, chunks = codes.numel() / kChunk; i < chunks; ++i)
    decode_chunk(p + i * 4 * bits, bits, c + i * kChunk);
}

void packed_dequantize(const Packed& w, const Tensor& out) {
  const Plan p = make_plan(w);
  dequant_rows(p, 0, w.rows(), out.data<float>());
}

void packed_matmul(const Packed& w, const Tensor& x, const Tensor& y, bool accumulate,
                   std::span<const LowRankTerm> terms) {
  const int64_t T = x.dim(0), rows = w.rows(), cols = w.cols();
  if (T == 0) return;
  // Terms the row kernels do not take: y += h L^T through the seam.
  auto add_terms = [&] {
    for (const LowRankTerm& tm : terms) {
      Tensor z = Tensor::empty({T, rows});
      ops::linear(tm.h, tm.L, z);
      ops::add_inplace(y, z);
    }
  };
  const Plan p = make_plan(w);
  const float* xp = x.data<float>();
  float* yp = y.data<float>();

  if (T > kGemvMaxT) {
    const int64_t slab = std::min(rows, std::max<int64_t>(16, kSlabBytes / (cols * 4)));
    Tensor buf = Tensor::empty({slab, cols}), tmp = Tensor::empty({T, slab});
    for (int64_t r0 = 0; r0 < rows; r0 += slab) {
      const int64_t n = std::min(slab, rows - r0);
      Tensor wr = buf.rows(0, n), out = n == slab ? tmp : Tensor::empty({T, n});
      dequant_rows(p, r0, r0 + n, wr.data<float>());
      ops::gemm(x, false, wr, true, out);
      const float* o = out.data<float>();
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < n; ++j)
          yp[t * rows + r0 + j] = (accumulate ? yp[t * rows + r0 + j] : 0.f) + o[t * n + j];
    }
    add_terms();
    return;
  }

  // Per-group sums of x for the offset term (unused, and cheap, for codebooks).
  std::vector<float> xsum(size_t(T * p.ngroups));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t g = 0; g < p.ngroups; ++g) {
      float s = 0;
      for (int64_t j = g * w.group; j < (g + 1) * w.group; ++j) s += xp[t * cols + j];
      xsum[size_t(t * p.ngroups + g)] = s;
    }
  const DotRowFn fn = dot_fn(p);
#pragma omp parallel
  {
    std::vector<float> sc(size_t(p.ngroups)), off(size_t(p.ngroups));
    float out[kGemvMaxT];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      fn(p, r, xp, T, xsum.data(), sc.data(), off.data(), out);
      for (int64_t t = 0; t < T; ++t) {
        float& dst = yp[t * rows + r];
        dst = accumulate ? dst + out[t] : out[t];
      }
    }
  }
  add_terms();
}


// ------------------------------------------------------------------ LoRDS rows
// A LoRDS row is decoded like a codebook row with a unit scale (Plan with no scales), then each
// value is multiplied by s_j = sum_k B_rk A_kj, formed in registers 8 columns at a time: S is
// never stored, and every s_j is the same chain of F32 fused multiply-adds in k order on every
// path (scalar std::fma, AVX2, the CUDA fmaf), so all three give the same dequantized values.
namespace {

struct LordsPlan {
  Plan codes;
  std::vector<float> B, A;  // F32 copies of the F16 factors: [rows, r], [r, cols]
  int64_t rank;
};

LordsPlan make_lords_plan(const Lords& w) {
  LordsPlan lp{Plan{w.codes.data<uint8_t>(), w.codes.dim(1), w.cols(), 1, w.cols() / kChunk,
                    w.bits, PackedFormat::Codebook, nullptr, nullptr, w.codebook.data<float>()},
               std::vector<float>(size_t(w.B.numel())), std::vector<float>(size_t(w.A.numel())),
               w.rank()};
  convert_to_f32(w.B.raw(), DType::F16, lp.B.data(), lp.B.size());
  convert_to_f32(w.A.raw(), DType::F16, lp.A.data(), lp.A.size());
  return lp;
}

// v (the row's codebook values) <- v * s; with nt > 0 instead out[t] = sum_j v_j s_j x[t, j]
// (v left unspecified).
void lords_scale_row_scalar(const LordsPlan& lp, int64_t r, float* v, const float* x, int64_t nt,
                            float* out) {
  const int64_t n = lp.codes.cols, k = lp.rank;
  const float* b = lp.B.data() + r * k;
  for (int64_t t = 0; t < nt; ++t) out[t] = 0;
  for (int64_t j0 = 0; j0 < n; j0 += 8) {
    float acc[kGemvMaxT][8] = {};
    for (int64_t j = j0; j < j0 + 8; ++j) {
      float s = 0;
      for (int64_t q = 0; q < k; ++q) s = std::fma(b[q], lp.A[size_t(q * n + j)], s);
      const float w = v[j] * s;
      if (nt == 0) v[j] = w;
      for (int64_t t = 0; t < nt; ++t) acc[t][j - j0] += w * x[t * n + j];
    }
    for (int64_t t = 0; t < nt; ++t)
      for (int l = 0; l < 8; ++l) out[t] += acc[t][l];
  }
}

// Rows r0 .. r0 + nr - 1 (nr <= kLordsRows) at once, each as lords_scale_row_scalar does for
// one: v[i] is row i's codebook values. Sharing each loaded vector of A among the rows cuts the
// reads of A (r x n, from L2) by the group size; every s_j is still its own fma chain in k
// order, so the bits do not depend on the grouping.
constexpr int kLordsRows = 4;
using LordsOut = float[kGemvMaxT];

void lords_scale_rows_scalar(const LordsPlan& lp, int64_t r0, int nr, float* const* v,
                             const float* x, int64_t nt, LordsOut* out) {
  for (int i = 0; i < nr; ++i) lords_scale_row_scalar(lp, r0 + i, v[i], x, nt, out[i]);
}

#if defined(LRQ_X86)
LRQ_AVX2 void lords_scale_rows_avx2(const LordsPlan& lp, int64_t r0, int nr, float* const* v,
                                    const float* x, int64_t nt, LordsOut* out) {
  const int64_t n = lp.codes.cols, k = lp.rank;
  const float* A = lp.A.data();
  const float* b[kLordsRows];
  for (int i = 0; i < kLordsRows; ++i)  // rows past nr repeat the last (computed, not used)
    b[i] = lp.B.data() + (r0 + std::min(i, nr - 1)) * k;
  __m256 acc[kLordsRows][kGemvMaxT];
  for (int i = 0; i < kLordsRows; ++i)
    for (int64_t t = 0; t < nt; ++t) acc[i][t] = _mm256_setzero_ps();
  // Two 8-column blocks per step: eight independent FMA chains, enough to cover the FMA
  // latency on two ports (n is a multiple of 32, so the blocks pair up).
  for (int64_t j = 0; j < n; j += 16) {
    __m256 s[2][kLordsRows];
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < kLordsRows; ++i) s[h][i] = _mm256_setzero_ps();
    for (int64_t q = 0; q < k; ++q) {
      const __m256 a0 = _mm256_loadu_ps(A + q * n + j), a1 = _mm256_loadu_ps(A + q * n + j + 8);
      for (int i = 0; i < kLordsRows; ++i) {
        const __m256 bq = _mm256_set1_ps(b[i][q]);
        s[0][i] = _mm256_fmadd_ps(bq, a0, s[0][i]);
        s[1][i] = _mm256_fmadd_ps(bq, a1, s[1][i]);
      }
    }
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < nr; ++i) {
        const int64_t jj = j + 8 * h;
        const __m256 w = _mm256_mul_ps(_mm256_loadu_ps(v[i] + jj), s[h][i]);
        if (nt == 0) _mm256_storeu_ps(v[i] + jj, w);
        for (int64_t t = 0; t < nt; ++t)
          acc[i][t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + t * n + jj), acc[i][t]);
      }
  }
  for (int i = 0; i < nr; ++i)
    for (int64_t t = 0; t < nt; ++t) out[i][t] = hsum_avx2(acc[i][t]);
}
#endif

using LordsRowFn = void (*)(const LordsPlan&, int64_t, int, float* const*, const float*, int64_t,
                            LordsOut*);
LordsRowFn lords_row_fn() {
#if defined(LRQ_X86)
  if (use_simd()) return lords_scale_rows_avx2;
#endif
  return lords_scale_rows_scalar;
}

// Rows [begin, end) of the LoRDS matrix into out; groups of kLordsRows rows fixed by index, one
// group per thread at a time (thread-count independent).
void lords_rows(const LordsPlan& lp, int64_t begin, int64_t end, float* out) {
  const DequantRowFn dec = dequant_fn(lp.codes);
  const LordsRowFn fn = lords_row_fn();
  const int64_t ngroups = (end - begin + kLordsRows - 1) / kLordsRows;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < ngroups; ++g) {
    const int64_t r0 = begin + g * kLordsRows;
    const int nr = int(std::min<int64_t>(kLordsRows, end - r0));
    float* v[kLordsRows];
    for (int i = 0; i < nr; ++i) {
      float sc = 0, off = 0;
      v[i] = out + (r0 + i - begin) * lp.codes.cols;
      dec(lp.codes, r0 + i, &sc, &off, v[i]);
    }
    fn(lp, r0, nr, v, nullptr, 0, nullptr);
  }
}

}  // namespace

void lords_dequantize(const Lords& w, const Tensor& out) {
  if (w.rows() == 0) return;
  lords_rows(make_lords_plan(w), 0, w.rows(), out.data<float>());
}

void lords_matmul(const Lords& w, const Tensor& x, const Tensor& y, bool accumulate) {
  const int64_t T = x.dim(0), rows = w.rows(), cols = w.cols();
  if (T == 0 || rows == 0) return;
  const LordsPlan lp = make_lords_plan(w);
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  if (T > kGemvMaxT) {
    const int64_t slab = std::min(rows, std::max<int64_t>(16, kSlabBytes / (cols * 4)));
    Tensor buf = Tensor::empty({slab, cols}), tmp = Tensor::empty({T, slab});
    for (int64_t r0 = 0; r0 < rows; r0 += slab) {
      const int64_t n = std::min(slab, rows - r0);
      Tensor wr = buf.rows(0, n), o = n == slab ? tmp : Tensor::empty({T, n});
      lords_rows(lp, r0, r0 + n, wr.data<float>());
      ops::gemm(x, false, wr, true, o);
      const float* op = o.data<float>();
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < n; ++j)
          yp[t * rows + r0 + j] = (accumulate ? yp[t * rows + r0 + j] : 0.f) + op[t * n + j];
    }
    return;
  }
  const DequantRowFn dec = dequant_fn(lp.codes);
  const LordsRowFn fn = lords_row_fn();
  const int64_t ngroups = (rows + kLordsRows - 1) / kLordsRows;
#pragma omp parallel
  {
    std::vector<float> buf(static_cast<size_t>(kLordsRows * cols));
    LordsOut out[kLordsRows];
#pragma omp for schedule(static)
    for (int64_t g = 0; g < ngroups; ++g) {
      const int64_t r0 = g * kLordsRows;
      const int nr = int(std::min<int64_t>(kLordsRows, rows - r0));
      float* v[kLordsRows];
      for (int i = 0; i < nr; ++i) {
        float sc = 0, off = 0;
        v[i] = buf.data() + i * cols;
        dec(lp.codes, r0 + i, &sc, &off, v[i]);
      }
      fn(lp, r0, nr, v, xp, T, out);
      for (int i = 0; i < nr; ++i)
        for (int64_t t = 0; t < T; ++t) {
          float& dst = yp[t * rows + r0 + i];
          dst = accumulate ? dst + out[i][t] : out[i][t];
        }
    }
  }
}

}  // namespace lrq::cpu
