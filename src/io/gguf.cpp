// GGUF reading and writing, and the ggml block codecs. The codecs follow the value formulas and
// bit layouts of ggml-common.h / ggml-quants.c (the file format is the contract); the encoders
// are ggml's reference round-to-nearest ones, so a tensor we quantize is the tensor
// llama-quantize writes without an importance matrix. This file is compiled with
// -ffp-contract=off (CMakeLists.txt): a fused x*id + 0.5 would round some codes differently from
// ggml's reference build.
#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>

#include "io/json_util.h"
#include "io/mapped_file.h"

namespace lrq::gguf {

static_assert(std::endian::native == std::endian::little,
              "GGUF files are read as little-endian; a big-endian host needs byte swaps");

using io::printable;

namespace {

// ------------------------------------------------------------------ block codecs
float h2f(uint16_t h) { return f16_to_f32(h); }

void decode_f32(const void* s, float* y, int64_t n) { std::memcpy(y, s, size_t(n) * 4); }
void decode_f16(const void* s, float* y, int64_t n) { convert_to_f32(s, DType::F16, y, size_t(n)); }
void decode_bf16(const void* s, float* y, int64_t n) {
  convert_to_f32(s, DType::BF16, y, size_t(n));
}
void encode_f32(const float* x, void* d, int64_t n) { std::memcpy(d, x, size_t(n) * 4); }
void encode_f16(const float* x, void* d, int64_t n) {
  convert_from_f32(x, d, DType::F16, size_t(n));
}
void encode_bf16(const float* x, void* d, int64_t n) {
  convert_from_f32(x, d, DType::BF16, size_t(n));
}

void decode_q4_0(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ4_0*>(s);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = float((b[i].qs[j] & 0xF) - 8) * d;
      y[j + 16] = float((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void decode_q4_1(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ4_1*>(s);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = float(b[i].qs[j] & 0xF) * d + m;
      y[j + 16] = float(b[i].qs[j] >> 4) * d + m;
    }
  }
}

uint32_t fifth_bits(const uint8_t qh[4]) {
  uint32_t v;
  std::memcpy(&v, qh, 4);
  return v;
}

void decode_q5_0(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ5_0*>(s);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = h2f(b[i].d);
    const uint32_t qh = fifth_bits(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int lo = (b[i].qs[j] & 0xF) | int((qh >> j) & 1) << 4;
      const int hi = (b[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
      y[j] = float(lo - 16) * d;
      y[j + 16] = float(hi - 16) * d;
    }
  }
}

void decode_q5_1(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ5_1*>(s);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    const uint32_t qh = fifth_bits(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int lo = (b[i].qs[j] & 0xF) | int((qh >> j) & 1) << 4;
      const int hi = (b[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
      y[j] = float(lo) * d + m;
      y[j + 16] = float(hi) * d + m;
    }
  }
}

void decode_q8_0(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ8_0*>(s);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = float(b[i].qs[j]) * d;
  }
}

// The reference encoders. Q4_0: the scale maps the value of largest magnitude (the first one, on
// ties) to code 0, d = max / -8; codes truncate x/d + 8.5 and saturate at 15.
void encode_q4_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float amax = 0, max = 0;
    for (int j = 0; j < kQK; ++j)
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    const float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < 16; ++j) {
      const float x0 = x[j] * id, x1 = x[j + 16] * id;
      const int q0 = std::min(15, int(int8_t(x0 + 8.5f)));
      const int q1 = std::min(15, int(int8_t(x1 + 8.5f)));
      b[i].qs[j] = uint8_t(q0 | q1 << 4);
    }
  }
}

// Q4_1: min and max of the block, d = (max - min) / 15, codes truncate (x - min)/d + 0.5.
void encode_q4_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float lo = std::numeric_limits<float>::max(), hi = -std::numeric_limits<float>::max();
    for (int j = 0; j < kQK; ++j) {
      lo = std::min(lo, x[j]);
      hi = std::max(hi, x[j]);
    }
    const float d = (hi - lo) / 15.f, id = d != 0.f ? 1.f / d : 0.f;
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(lo);
    for (int j = 0; j < 16; ++j) {
      const float x0 = (x[j] - lo) * id, x1 = (x[j + 16] - lo) * id;
      const int q0 = std::min(15, int(int8_t(x0 + 0.5f)));
      const int q1 = std::min(15, int(int8_t(x1 + 0.5f)));
      b[i].qs[j] = uint8_t(q0 | q1 << 4);
    }
  }
}

// Q8_0: d = absmax / 127, codes round half away from zero (roundf).
void encode_q8_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) b[i].qs[j] = int8_t(std::round(x[j] * id));
  }
}

// K-quants. Q2_K: 16 sub-blocks of 16; within each 128-value half, byte l of the 32 code bytes
// holds values l, l+32, l+64, l+96 of that half in bits 0-1, 2-3, 4-5, 6-7, and sub-blocks
// alternate between bytes 0-15 and 16-31.
void decode_q2_k(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ2_K*>(s);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const uint8_t* q = b[i].qs;
    int is = 0;
    for (int half = 0; half < 2; ++half, q += 32)
      for (int shift = 0; shift < 8; shift += 2)
        for (int part = 0; part < 2; ++part) {
          const uint8_t sc = b[i].scales[is++];
          const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * float((q[l + 16 * part] >> shift) & 3) - ml;
        }
  }
}

// Q3_K: the 16 6-bit scales are 4 low bits (bytes 0-7, low then high nibble) and 2 high bits
// (bytes 8-11, sub-block j at bits 2*(j/4) of byte 8 + j%4).
void decode_q3_k(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ3_K*>(s);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d);
    int scale[16];
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? b[i].scales[j] & 0xF : b[i].scales[j - 8] >> 4;
      const int high = (b[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3;
      scale[j] = (low | high << 4) - 32;
    }
    const uint8_t* q = b[i].qs;
    uint8_t m = 1;
    int is = 0;
    for (int half = 0; half < 2; ++half, q += 32)
      for (int shift = 0; shift < 8; shift += 2, m = uint8_t(m << 1))
        for (int part = 0; part < 2; ++part) {
          const float dl = d * float(scale[is++]);
          for (int l = 0; l < 16; ++l) {
            const int k = l + 16 * part;
            const int code = ((q[k] >> shift) & 3) - ((b[i].hmask[k] & m) ? 0 : 4);
            *y++ = dl * float(code);
          }
        }
  }
}

// Q4_K and Q5_K: eight 6-bit scales and mins in 12 bytes: for j < 4, scale j is bits 0-5 of byte
// j and min j of byte j+4; for j >= 4 their low 4 bits are the nibbles of byte j+4 and their high
// 2 bits the top bits of bytes j-4 (scale) and j (min).
void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void decode_q4_k(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ4_K*>(s);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0; j < 8; j += 2, q += 32) {
      int sc, m;
      scale_min_k4(j, b[i].scales, &sc, &m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      scale_min_k4(j + 1, b[i].scales, &sc, &m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    }
  }
}

void decode_q5_k(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ5_K*>(s);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    const uint8_t* ql = b[i].qs;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 8; j += 2, ql += 32, u1 = uint8_t(u1 << 2), u2 = uint8_t(u2 << 2)) {
      int sc, m;
      scale_min_k4(j, b[i].scales, &sc, &m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      scale_min_k4(j + 1, b[i].scales, &sc, &m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l)
        *y++ = d1 * float((ql[l] & 0xF) + ((b[i].qh[l] & u1) ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l)
        *y++ = d2 * float((ql[l] >> 4) + ((b[i].qh[l] & u2) ? 16 : 0)) - m2;
    }
  }
}

// Q6_K: per 128-value half, ql bytes 0-31 hold values l (low nibble) and l+64 (high), bytes
// 32-63 values l+32 and l+96; qh byte l their top two bits at 0, 2, 4, 6 in the order l, l+32,
// l+64, l+96. The product is evaluated as (d * scale) * code, left to right, as ggml does.
void decode_q6_k(const void* s, float* y, int64_t n) {
  auto* b = static_cast<const BlockQ6_K*>(s);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d);
    const uint8_t* ql = b[i].ql;
    const uint8_t* qh = b[i].qh;
    const int8_t* sc = b[i].scales;
    for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8)
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
        const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
        const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
        y[l] = d * float(sc[is]) * float(q1);
        y[l + 32] = d * float(sc[is + 2]) * float(q2);
        y[l + 64] = d * float(sc[is + 4]) * float(q3);
        y[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
  }
}

// Every type ggml has a number for, so a file of a type we cannot read is named, not "unknown";
// sizes from ggml's type traits (block values, block bytes).
constexpr TypeTraits kTypes[] = {
    {Type::F32, "f32", 1, 4, decode_f32, encode_f32},
    {Type::F16, "f16", 1, 2, decode_f16, encode_f16},
    {Type::Q4_0, "q4_0", 32, 18, decode_q4_0, encode_q4_0},
    {Type::Q4_1, "q4_1", 32, 20, decode_q4_1, encode_q4_1},
    {Type::Q5_0, "q5_0", 32, 22, decode_q5_0, nullptr},
    {Type::Q5_1, "q5_1", 32, 24, decode_q5_1, nullptr},
    {Type::Q8_0, "q8_0", 32, 34, decode_q8_0, encode_q8_0},
    {Type::Q8_1, "q8_1", 32, 36, nullptr, nullptr},
    {Type::Q2_K, "q2_K", 256, 84, decode_q2_k, nullptr},
    {Type::Q3_K, "q3_K", 256, 110, decode_q3_k, nullptr},
    {Type::Q4_K, "q4_K", 256, 144, decode_q4_k, nullptr},
    {Type::Q5_K, "q5_K", 256, 176, decode_q5_k, nullptr},
    {Type::Q6_K, "q6_K", 256, 210, decode_q6_k, nullptr},
    {Type::Q8_K, "q8_K", 256, 292, nullptr, nullptr},
    {Type::IQ2_XXS, "iq2_xxs", 256, 66, nullptr, nullptr},
    {Type::IQ2_XS, "iq2_xs", 256, 74, nullptr, nullptr},
    {Type::IQ3_XXS, "iq3_xxs", 256, 98, nullptr, nullptr},
    {Type::IQ1_S, "iq1_s", 256, 50, nullptr, nullptr},
    {Type::IQ4_NL, "iq4_nl", 32, 18, nullptr, nullptr},
    {Type::IQ3_S, "iq3_s", 256, 110, nullptr, nullptr},
    {Type::IQ2_S, "iq2_s", 256, 82, nullptr, nullptr},
    {Type::IQ4_XS, "iq4_xs", 256, 136, nullptr, nullptr},
    {Type::I8, "i8", 1, 1, nullptr, nullptr},
    {Type::I16, "i16", 1, 2, nullptr, nullptr},
    {Type::I32, "i32", 1, 4, nullptr, nullptr},
    {Type::I64, "i64", 1, 8, nullptr, nullptr},
    {Type::F64, "f64", 1, 8, nullptr, nullptr},
    {Type::IQ1_M, "iq1_m", 256, 56, nullptr, nullptr},
    {Type::BF16, "bf16", 1, 2, decode_bf16, encode_bf16},
    {Type::TQ1_0, "tq1_0", 256, 54, nullptr, nullptr},
    {Type::TQ2_0, "tq2_0", 256, 66, nullptr, nullptr},
    {Type::MXFP4, "mxfp4", 32, 17, nullptr, nullptr},
    {Type::NVFP4, "nvfp4", 64, 36, nullptr, nullptr},
    {Type::Q1_0, "q1_0", 128, 18, nullptr, nullptr},
    {Type::Q2_0, "q2_0", 64, 18, nullptr, nullptr},
};

// The block structs and the table describe the same bytes.
static_assert(
    kTypes[2].block_bytes == sizeof(BlockQ4_0) && kTypes[3].block_bytes == sizeof(BlockQ4_1) &&
    kTypes[4].block_bytes == sizeof(BlockQ5_0) && kTypes[5].block_bytes == sizeof(BlockQ5_1) &&
    kTypes[6].block_bytes == sizeof(BlockQ8_0) && kTypes[8].block_bytes == sizeof(BlockQ2_K) &&
    kTypes[9].block_bytes == sizeof(BlockQ3_K) && kTypes[10].block_bytes == sizeof(BlockQ4_K) &&
    kTypes[11].block_bytes == sizeof(BlockQ5_K) && kTypes[12].block_bytes == sizeof(BlockQ6_K));

std::string type_list(bool encoders) {
  std::string out;
  for (const TypeTraits& t : kTypes)
    if (encoders ? t.encode != nullptr : t.decode != nullptr)
      out += (out.empty() ? "" : ", ") + std::string(t.name);
  return out;
}

}  // namespace

// ------------------------------------------------------------------ K-quant packing
namespace {
constexpr KQuantLayout kKLayouts[] = {
    {Type::Q2_K, 16, 2, 0, 15, 15, 0},
    {Type::Q3_K, 16, 3, -32, 31, 0, 4},
    {Type::Q4_K, 32, 4, 0, 63, 63, 0},
    {Type::Q5_K, 32, 5, 0, 63, 63, 0},
    {Type::Q6_K, 16, 6, -128, 127, 0, 32},
};

// The twelve scale bytes of Q4_K/Q5_K: what scale_min_k4 reads back.
void pack_scale_min_k4(const int* sc, const int* m, uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = uint8_t((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    q[j + 8] = uint8_t((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

// Q2_K and Q3_K share the 2-bit code layout: value p of a 128-value half h sits in byte
// 32h + 16((p%32)/16) + p%16 at bits 2(p/32).
void pack_2bit_codes(const uint8_t* code, uint8_t* qs) {
  std::memset(qs, 0, 64);
  for (int pos = 0; pos < int(kQK_K); ++pos) {
    const int h = pos / 128, r = pos % 128;
    qs[32 * h + 16 * ((r % 32) / 16) + r % 16] |= uint8_t((code[pos] & 3) << (2 * (r / 32)));
  }
}
}  // namespace

const KQuantLayout* kquant_layout(Type t) {
  for (const KQuantLayout& l : kKLayouts)
    if (l.type == t) return &l;
  return nullptr;
}

void pack_kquant(const KQuantLayout& l, const KQuantBlock& b, void* dst) {
  for (int j = 0; j < l.subs(); ++j)
    LRQ_ASSERT(b.scale[j] >= l.scale_min && b.scale[j] <= l.scale_max && b.min[j] >= 0 &&
               b.min[j] <= l.min_max);
  switch (l.type) {
    case Type::Q2_K: {
      BlockQ2_K k{};
      for (int j = 0; j < 16; ++j) k.scales[j] = uint8_t(b.scale[j] | b.min[j] << 4);
      pack_2bit_codes(b.code, k.qs);
      k.d = b.d;
      k.dmin = b.dmin;
      std::memcpy(dst, &k, sizeof k);
      return;
    }
    case Type::Q3_K: {
      BlockQ3_K k{};
      for (int j = 0; j < 16; ++j) {
        const int u = b.scale[j] + 32;
        k.scales[j % 8] |= uint8_t((u & 0xF) << (j < 8 ? 0 : 4));
        k.scales[8 + j % 4] |= uint8_t((u >> 4) << (2 * (j / 4)));
      }
      pack_2bit_codes(b.code, k.qs);
      // The third code bit: set means "no -4", so it is bit 2 of the code.
      for (int pos = 0; pos < int(kQK_K); ++pos) {
        const int h = pos / 128, r = pos % 128;
        if (b.code[pos] & 4) k.hmask[16 * ((r % 32) / 16) + r % 16] |= uint8_t(1 << (4 * h + r / 32));
      }
      k.d = b.d;
      std::memcpy(dst, &k, sizeof k);
      return;
    }
    case Type::Q4_K:
    case Type::Q5_K: {
      uint8_t scales[12];
      pack_scale_min_k4(b.scale, b.min, scales);
      // Each 64-value chunk: byte l holds value l (low nibble) and value l + 32 (high nibble).
      uint8_t qs[kQK_K / 2], qh[kQK_K / 8] = {};
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
          const uint8_t lo = b.code[64 * c + l], hi = b.code[64 * c + 32 + l];
          qs[32 * c + l] = uint8_t((lo & 0xF) | (hi & 0xF) << 4);
          qh[l] |= uint8_t(((lo >> 4) & 1) << (2 * c) | ((hi >> 4) & 1) << (2 * c + 1));
        }
      if (l.type == Type::Q4_K) {
        BlockQ4_K k{b.d, b.dmin, {}, {}};
        std::memcpy(k.scales, scales, 12);
        std::memcpy(k.qs, qs, sizeof qs);
        std::memcpy(dst, &k, sizeof k);
      } else {
        BlockQ5_K k{b.d, b.dmin, {}, {}, {}};
        std::memcpy(k.scales, scales, 12);
        std::memcpy(k.qh, qh, sizeof qh);
        std::memcpy(k.qs, qs, sizeof qs);
        std::memcpy(dst, &k, sizeof k);
      }
      return;
    }
    case Type::Q6_K: {
      BlockQ6_K k{};
      for (int j = 0; j < 16; ++j) k.scales[j] = int8_t(b.scale[j]);
      // Per half: ql byte l holds values l and l+64 (low, high nibble), byte l+32 values l+32 and
      // l+96; qh byte l their top two bits at 0, 2, 4, 6 in the order l, l+32, l+64, l+96.
      for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 32; ++l) {
          const uint8_t* c = b.code + 128 * h;
          k.ql[64 * h + l] = uint8_t((c[l] & 0xF) | (c[l + 64] & 0xF) << 4);
          k.ql[64 * h + l + 32] = uint8_t((c[l + 32] & 0xF) | (c[l + 96] & 0xF) << 4);
          k.qh[32 * h + l] = uint8_t((c[l] >> 4) | (c[l + 32] >> 4) << 2 | (c[l + 64] >> 4) << 4 |
                                     (c[l + 96] >> 4) << 6);
        }
      k.d = b.d;
      std::memcpy(dst, &k, sizeof k);
      return;
    }
    default:
      LRQ_ASSERT(false && "not a K-quant");
  }
}

const TypeTraits* find_type(uint32_t id) {
  for (const TypeTraits& t : kTypes)
    if (uint32_t(t.type) == id) return &t;
  return nullptr;
}

const TypeTraits& traits(Type t) {
  const TypeTraits* p = find_type(uint32_t(t));
  LRQ_ASSERT(p != nullptr);
  return *p;
}

std::string_view type_name(Type t) { return traits(t).name; }

bool type_from_name(std::string_view name, Type* out) {
  for (const TypeTraits& t : kTypes) {
    if (t.name.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size() && same; ++i)
      same = std::tolower(static_cast<unsigned char>(name[i])) ==
             std::tolower(static_cast<unsigned char>(t.name[i]));
    if (same) {
      *out = t.type;
      return true;
    }
  }
  return false;
}

size_t row_bytes(Type t, int64_t n) {
  const TypeTraits& tr = traits(t);
  LRQ_ASSERT(n % tr.block == 0);
  return size_t(n / tr.block) * tr.block_bytes;
}

std::string decodable_types() { return type_list(false); }
std::string encodable_types() { return type_list(true); }

// ------------------------------------------------------------------ values
std::string_view value_type_name(ValueType t) {
  static constexpr std::string_view names[] = {"u8",   "i8",  "u16", "i16", "u32", "i32", "f32",
                                               "bool", "str", "arr", "u64", "i64", "f64"};
  return uint32_t(t) < std::size(names) ? names[uint32_t(t)] : "?";
}

namespace {
// Bytes of one numeric or bool element; 0 for strings and arrays.
size_t scalar_size(ValueType t) {
  switch (t) {
    case ValueType::U8:
    case ValueType::I8:
    case ValueType::Bool: return 1;
    case ValueType::U16:
    case ValueType::I16: return 2;
    case ValueType::U32:
    case ValueType::I32:
    case ValueType::F32: return 4;
    case ValueType::U64:
    case ValueType::I64:
    case ValueType::F64: return 8;
    default: return 0;
  }
}

template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T>
Value scalar(ValueType t, T v) {
  std::vector<uint8_t> b(sizeof v);
  std::memcpy(b.data(), &v, sizeof v);
  return Value::raw(t, ValueType::U8, 1, std::move(b));
}

template <class T>
Value array(ValueType elem, const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return Value::raw(ValueType::Array, elem, v.size(), std::move(b));
}

// Element i of numeric type t at p as double (integers exactly up to 2^53).
double number_of(ValueType t, const uint8_t* p) {
  switch (t) {
    case ValueType::U8: return *p;
    case ValueType::I8: return int8_t(*p);
    case ValueType::Bool: return *p != 0;
    case ValueType::U16: return load_le<uint16_t>(p);
    case ValueType::I16: return load_le<int16_t>(p);
    case ValueType::U32: return load_le<uint32_t>(p);
    case ValueType::I32: return load_le<int32_t>(p);
    case ValueType::F32: return load_le<float>(p);
    case ValueType::U64: return double(load_le<uint64_t>(p));
    case ValueType::I64: return double(load_le<int64_t>(p));
    case ValueType::F64: return load_le<double>(p);
    default: return 0;
  }
}

std::optional<int64_t> int_of(ValueType t, const uint8_t* p) {
  switch (t) {
    case ValueType::U8: return *p;
    case ValueType::I8: return int8_t(*p);
    case ValueType::U16: return load_le<uint16_t>(p);
    case ValueType::I16: return load_le<int16_t>(p);
    case ValueType::U32: return load_le<uint32_t>(p);
    case ValueType::I32: return load_le<int32_t>(p);
    case ValueType::I64: return load_le<int64_t>(p);
    case ValueType::U64: {
      const uint64_t v = load_le<uint64_t>(p);
      if (v > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return int64_t(v);
    }
    default: return std::nullopt;
  }
}
}  // namespace

Value Value::u32(uint32_t v) { return scalar(ValueType::U32, v); }
Value Value::i32(int32_t v) { return scalar(ValueType::I32, v); }
Value Value::u64(uint64_t v) { return scalar(ValueType::U64, v); }
Value Value::f32(float v) { return scalar(ValueType::F32, v); }
Value Value::boolean(bool v) { return scalar(ValueType::Bool, uint8_t(v ? 1 : 0)); }
Value Value::f32s(const std::vector<float>& v) { return array(ValueType::F32, v); }
Value Value::i32s(const std::vector<int32_t>& v) { return array(ValueType::I32, v); }

Value Value::string(std::string v) {
  Value r;
  r.type_ = ValueType::String;
  r.str_ = std::move(v);
  return r;
}

Value Value::strings(std::vector<std::string> v) {
  Value r;
  r.type_ = ValueType::Array;
  r.elem_ = ValueType::String;
  r.count_ = v.size();
  r.strs_ = std::move(v);
  return r;
}

Value Value::raw(ValueType t, ValueType elem, uint64_t count, std::vector<uint8_t> bytes) {
  Value r;
  r.type_ = t;
  r.elem_ = elem;
  r.count_ = t == ValueType::Array ? count : 1;
  r.bytes_ = std::move(bytes);
  LRQ_ASSERT(r.bytes_.size() == r.count_ * scalar_size(t == ValueType::Array ? elem : t));
  return r;
}

std::optional<int64_t> Value::as_int() const {
  if (is_array() || scalar_size(type_) == 0) return std::nullopt;
  return int_of(type_, bytes_.data());
}

std::optional<double> Value::as_number() const {
  if (is_array() || scalar_size(type_) == 0 || type_ == ValueType::Bool) return std::nullopt;
  return number_of(type_, bytes_.data());
}

std::optional<bool> Value::as_bool() const {
  if (type_ != ValueType::Bool) return std::nullopt;
  return bytes_[0] != 0;
}

double Value::number_at(uint64_t i) const {
  LRQ_ASSERT(is_array() && i < count_ && scalar_size(elem_) > 0);
  return number_of(elem_, bytes_.data() + i * scalar_size(elem_));
}

int64_t Value::int_at(uint64_t i) const {
  LRQ_ASSERT(is_array() && i < count_ && scalar_size(elem_) > 0);
  return int_of(elem_, bytes_.data() + i * scalar_size(elem_)).value_or(-1);
}

std::string Value::describe() const {
  if (type_ == ValueType::String) return fmt::format("str \"{}\"", printable(str_, 40));
  if (is_array()) return fmt::format("arr[{}, {}]", value_type_name(elem_), count_);
  if (type_ == ValueType::F32 || type_ == ValueType::F64)
    return fmt::format("{} {}", value_type_name(type_), number_of(type_, bytes_.data()));
  if (auto i = as_int()) return fmt::format("{} {}", value_type_name(type_), *i);
  if (type_ == ValueType::Bool) return bytes_[0] ? "bool true" : "bool false";
  return fmt::format("{} {}", value_type_name(type_), load_le<uint64_t>(bytes_.data()));
}

// ------------------------------------------------------------------ reading
int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

Shape TensorInfo::shape() const { return Shape(ne.rbegin(), ne.rend()); }

namespace {

constexpr uint32_t kMaxDims = 4;      // GGML_MAX_DIMS
constexpr size_t kMaxNameBytes = 63;  // GGML_MAX_NAME is 64 with the terminator

// Bounds-checked reads over the mapped bytes; running past the end is one Error that names what
// was being read, where, and the file size.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}
  size_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  template <class What>
  const uint8_t* take(uint64_t n, const What& what) {
    if (n > left())
      fail(path_,
           "truncated file: {} at byte {} needs {} bytes but only {} remain (file of {} bytes)",
           what(), pos_, n, left(), size_);
    const uint8_t* p = data_ + pos_;
    pos_ += size_t(n);
    return p;
  }
  template <class T, class What>
  T read(const What& what) {
    return load_le<T>(take(sizeof(T), what));
  }
  template <class What>
  std::string str(const What& what) {
    const uint64_t n = read<uint64_t>([&] { return "the length of " + what(); });
    if (n > left())
      fail(path_,
           "{} at byte {} claims {} bytes, more than the {} left in the file (corrupt or "
           "truncated)",
           what(), pos_ - 8, n, left());
    const uint8_t* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), size_t(n));
  }

 private:
  const uint8_t* data_;
  size_t size_, pos_ = 0;
  const std::string& path_;
};

bool valid_value_type(uint32_t t) { return t <= uint32_t(ValueType::F64); }

}  // namespace

File File::open(const std::string& path) {
  File f;
  f.path_ = path;
  f.file_ = MappedFile::open(path);
  const size_t size = f.file_->size();
  const auto* base = reinterpret_cast<const uint8_t*>(f.file_->data());
  if (size < 4 || std::memcmp(base, "GGUF", 4) != 0) {
    std::string head;
    for (size_t i = 0; i < size && i < 4; ++i)
      head += fmt::format("{}{:02x}", i ? " " : "", base[i]);
    fail(path, "not a GGUF file: {} bytes, starting with [{}] instead of \"GGUF\"", size, head);
  }
  Cursor c(base, size, path);
  c.take(4, [] { return std::string("the magic"); });
  f.version_ = c.read<uint32_t>([] { return std::string("the version"); });
  if ((f.version_ & 0xFFFF) == 0 && f.version_ != 0)
    fail(path, "GGUF version 0x{:08x}: a big-endian file? only little-endian GGUF is supported",
         f.version_);
  if (f.version_ != 2 && f.version_ != 3)
    fail(path, "GGUF version {} is not supported (versions 2 and 3 are)", f.version_);
  const int64_t n_tensors = c.read<int64_t>([] { return std::string("the tensor count"); });
  const int64_t n_kv = c.read<int64_t>([] { return std::string("the metadata count"); });
  // Each pair needs at least 14 bytes (length, one key byte, type, one value byte) and each
  // tensor info 25: a count beyond that cannot be real, and must not size an allocation.
  if (n_kv < 0 || uint64_t(n_kv) > c.left() / 14)
    fail(path, "metadata count {} cannot fit in a file of {} bytes (corrupt or truncated?)", n_kv,
         size);
  if (n_tensors < 0 || uint64_t(n_tensors) > c.left() / 25)
    fail(path, "tensor count {} cannot fit in a file of {} bytes (corrupt or truncated?)",
         n_tensors, size);

  for (int64_t i = 0; i < n_kv; ++i) {
    std::string key = c.str([&] { return fmt::format("the key of metadata pair {}", i); });
    if (key.empty()) fail(path, "metadata pair {} has an empty key", i);
    const std::string pkey = printable(key);
    if (f.kv_index_.count(key)) fail(path, "metadata key '{}' appears twice", pkey);
    auto what = [&] { return fmt::format("the value of metadata key '{}'", pkey); };
    const uint32_t type = c.read<uint32_t>(what);
    if (!valid_value_type(type))
      fail(path, "metadata key '{}' has unknown value type {}", pkey, type);
    Value v;
    if (ValueType(type) == ValueType::Array) {
      const uint32_t elem = c.read<uint32_t>(what);
      if (!valid_value_type(elem))
        fail(path, "metadata key '{}' is an array of unknown value type {}", pkey, elem);
      if (ValueType(elem) == ValueType::Array)
        fail(path, "metadata key '{}' is an array of arrays, which GGUF does not allow", pkey);
      const uint64_t n = c.read<uint64_t>(what);
      if (ValueType(elem) == ValueType::String) {
        if (n > c.left() / 8)
          fail(path, "metadata key '{}': an array of {} strings cannot fit in the {} bytes left",
               pkey, n, c.left());
        std::vector<std::string> strs;
        strs.reserve(size_t(n));
        for (uint64_t k = 0; k < n; ++k)
          strs.push_back(
              c.str([&] { return fmt::format("string {} of metadata key '{}'", k, pkey); }));
        v = Value::strings(std::move(strs));
      } else {
        const size_t es = scalar_size(ValueType(elem));
        if (n > c.left() / es)
          fail(path, "metadata key '{}': an array of {} {} values cannot fit in the {} bytes left",
               pkey, n, value_type_name(ValueType(elem)), c.left());
        const uint8_t* p = c.take(n * es, what);
        v = Value::raw(ValueType::Array, ValueType(elem), n, std::vector<uint8_t>(p, p + n * es));
      }
    } else if (ValueType(type) == ValueType::String) {
      v = Value::string(c.str(what));
    } else {
      const size_t es = scalar_size(ValueType(type));
      const uint8_t* p = c.take(es, what);
      v = Value::raw(ValueType(type), ValueType::U8, 1, std::vector<uint8_t>(p, p + es));
    }
    f.kv_index_.emplace(key, f.kv_.size());
    f.kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const Value* a = f.find("general.alignment")) {
    if (a->type() != ValueType::U32)
      fail(path, "general.alignment is {}, expected a u32", a->describe());
    const uint64_t al = uint64_t(*a->as_int());
    if (al == 0 || (al & (al - 1)) != 0)
      fail(path, "general.alignment {} is not a power of two", al);
    f.alignment_ = al;
  }

  for (int64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    t.name = c.str([&] { return fmt::format("the name of tensor {}", i); });
    const std::string pname = printable(t.name);
    if (t.name.empty()) fail(path, "tensor {} has an empty name", i);
    if (t.name.size() > kMaxNameBytes)
      fail(path, "tensor name '{}' is {} bytes, longer than ggml's limit of {}", pname,
           t.name.size(), kMaxNameBytes);
    if (f.tensor_index_.count(t.name)) fail(path, "tensor '{}' appears twice", pname);
    auto what = [&] { return fmt::format("the info of tensor '{}'", pname); };
    const uint32_t n_dims = c.read<uint32_t>(what);
    if (n_dims > kMaxDims)
      fail(path, "tensor '{}' has {} dimensions; ggml allows at most {}", pname, n_dims, kMaxDims);
    int64_t numel = 1;
    bool overflow = false;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const int64_t ne = c.read<int64_t>(what);
      if (ne < 0) fail(path, "tensor '{}' has negative dimension {} (ne[{}])", pname, ne, d);
      overflow |= __builtin_mul_overflow(numel, ne, &numel);
      t.ne.push_back(ne);
    }
    if (overflow) fail(path, "tensor '{}' has dimensions whose product overflows", pname);
    const uint32_t type = c.read<uint32_t>(what);
    const TypeTraits* tr = find_type(type);
    if (!tr) fail(path, "tensor '{}' has unknown ggml type {}", pname, type);
    t.type = tr->type;
    const int64_t ne0 = t.ne.empty() ? 1 : t.ne[0];
    if (ne0 % tr->block != 0)
      fail(path,
           "tensor '{}' of type {} has rows of {} values, not a whole number of {}-value "
           "blocks",
           pname, tr->name, ne0, tr->block);
    if (__builtin_mul_overflow(uint64_t(numel / tr->block), uint64_t(tr->block_bytes), &t.bytes))
      fail(path, "tensor '{}' is impossibly large", pname);
    t.offset = c.read<uint64_t>(what);
    f.tensor_index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t end_of_infos = c.pos();
  f.data_start_ = (end_of_infos + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  if (f.data_start_ > size) {
    if (!f.tensors_.empty())
      fail(path,
           "the data section would start at byte {}, past the end of the file ({} bytes; "
           "truncated?)",
           f.data_start_, size);
    f.data_start_ = size;
  }
  const uint64_t data_size = size - f.data_start_;
  std::vector<const TensorInfo*> order;
  for (const TensorInfo& t : f.tensors_) {
    const std::string pname = printable(t.name);
    if (t.offset % f.alignment_ != 0)
      fail(path, "tensor '{}' starts at data offset {}, not a multiple of the alignment {}", pname,
           t.offset, f.alignment_);
    if (t.offset > data_size || t.bytes > data_size - t.offset)
      fail(path,
           "tensor '{}' occupies data bytes [{}, {}), past the end of the data section ({} "
           "bytes; truncated?)",
           pname, t.offset, uint64_t(t.offset) + t.bytes, data_size);
    if (t.bytes > 0) order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  // Sorted by start, a range overlaps an earlier one iff it starts before the furthest end.
  const TensorInfo* reach = nullptr;
  for (const TensorInfo* t : order) {
    if (reach && t->offset < reach->offset + reach->bytes)
      fail(path, "tensor '{}' [{}, {}) overlaps tensor '{}' [{}, {}) in the data section",
           printable(t->name), t->offset, t->offset + t->bytes, printable(reach->name),
           reach->offset, reach->offset + reach->bytes);
    if (!reach || t->offset + t->bytes > reach->offset + reach->bytes) reach = t;
  }
  return f;
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* File::tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* File::data(const TensorInfo& t) const {
  return reinterpret_cast<const uint8_t*>(file_->data()) + data_start_ + t.offset;
}

std::optional<std::string> File::opt_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (!v->as_string()) fail(path_, "metadata {} is {}, expected a string", key, v->describe());
  return *v->as_string();
}

std::optional<int64_t> File::opt_int(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  auto i = v->as_int();
  if (!i) fail(path_, "metadata {} is {}, expected an integer", key, v->describe());
  return i;
}

std::optional<double> File::opt_number(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  auto d = v->as_number();
  if (!d) fail(path_, "metadata {} is {}, expected a number", key, v->describe());
  return d;
}

std::optional<bool> File::opt_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  auto b = v->as_bool();
  if (!b) fail(path_, "metadata {} is {}, expected a bool", key, v->describe());
  return b;
}

std::string File::req_string(std::string_view key) const {
  auto s = opt_string(key);
  if (!s) fail(path_, "missing metadata {}", key);
  return *s;
}

int64_t File::req_int(std::string_view key) const {
  auto i = opt_int(key);
  if (!i) fail(path_, "missing metadata {}", key);
  return *i;
}

namespace {
// The lrquant dtype a float type is viewed as; nullopt for block types (decoded to F32).
std::optional<DType> view_dtype(Type t) {
  if (t == Type::F32) return DType::F32;
  if (t == Type::F16) return DType::F16;
  if (t == Type::BF16) return DType::BF16;
  return std::nullopt;
}
}  // namespace

Tensor File::load(const TensorInfo& t) const { return load_rows(t, nullptr); }

Tensor File::load_rows(const TensorInfo& t, const std::function<int64_t(int64_t)>& src_row) const {
  const TypeTraits& tr = traits(t.type);
  if (!tr.decode)
    fail(path_, "tensor '{}' has type {}, which lrquant cannot read (readable: {})",
         printable(t.name), tr.name, decodable_types());
  const Shape shape = t.shape();
  const auto vt = view_dtype(t.type);
  const uint8_t* p = data(t);
  if (!src_row && vt && reinterpret_cast<uintptr_t>(p) % dtype_size(*vt) == 0)
    // Read-only mapping: writing through a checkpoint view is a bug the page protection turns
    // into a crash, never a silent change.
    return Tensor::wrap(const_cast<uint8_t*>(p), shape, *vt, Device::CPU, file_);
  const int64_t ne0 = t.ne.empty() ? 1 : t.ne[0];
  const int64_t rows = ne0 == 0 ? 0 : t.numel() / ne0;
  if (src_row) LRQ_ASSERT(t.ne.size() == 2);
  const size_t rb = row_bytes(t.type, ne0);
  Tensor out = Tensor::empty(shape, vt.value_or(DType::F32));
  auto* dst = static_cast<uint8_t*>(out.raw());
  const size_t out_rb = size_t(ne0) * dtype_size(out.dtype());
#pragma omp parallel for schedule(static) if (rows > 64)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t s = src_row ? src_row(r) : r;
    const uint8_t* src = p + size_t(s) * rb;
    if (vt)
      std::memcpy(dst + size_t(r) * out_rb, src, rb);
    else
      tr.decode(src, reinterpret_cast<float*>(dst + size_t(r) * out_rb), ne0);
  }
  return out;
}

bool is_gguf_file(const std::string& path) {
  try {
    auto f = MappedFile::open(path);
    return f->size() >= 4 && std::memcmp(f->data(), "GGUF", 4) == 0;
  } catch (const Error&) {
    return false;
  }
}

// ------------------------------------------------------------------ writing
void Writer::set(const std::string& key, Value v) {
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  kv_.emplace_back(key, std::move(v));
}

void Writer::add_tensor(std::string name, std::vector<int64_t> ne, Type type,
                        std::function<void(uint8_t* dst)> fill) {
  const TypeTraits& tr = traits(type);
  int64_t numel = 1;
  for (int64_t d : ne) numel *= d;
  Pending p{std::move(name), std::move(ne), type, 0, std::move(fill)};
  p.bytes = uint64_t(numel / tr.block) * tr.block_bytes;
  tensors_.push_back(std::move(p));
}

namespace {
void put_u32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& s, std::string_view v) {
  put_u64(s, v.size());
  s.append(v);
}
uint64_t pad_to(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }
}  // namespace

uint64_t Writer::file_bytes() const {
  uint64_t header = 24;
  for (const auto& [k, v] : kv_) {
    header += 8 + k.size() + 4;
    if (v.is_array()) header += 12;
    if (v.type() == ValueType::String) header += 8 + v.as_string()->size();
    for (const auto& s : v.string_array()) header += 8 + s.size();
    header += v.bytes().size();
  }
  uint64_t data = 0;
  for (const Pending& t : tensors_) {
    header += 8 + t.name.size() + 4 + 8 * t.ne.size() + 4 + 8;
    data += pad_to(t.bytes, alignment_);
  }
  return pad_to(header, alignment_) + data;
}

void Writer::write(const std::string& path) const {
  std::map<std::string_view, int> seen;
  for (const Pending& t : tensors_) {
    const TypeTraits& tr = traits(t.type);
    if (t.name.empty() || t.name.size() > kMaxNameBytes)
      fail(path, "tensor name '{}' must be 1 to {} bytes", printable(t.name), kMaxNameBytes);
    if (!seen.emplace(t.name, 0).second) fail(path, "duplicate tensor name '{}'", t.name);
    if (t.ne.empty() || t.ne.size() > kMaxDims)
      fail(path, "tensor '{}' has {} dimensions (1 to {})", t.name, t.ne.size(), kMaxDims);
    if (t.ne[0] % tr.block != 0)
      fail(path, "tensor '{}': rows of {} values are not whole {} blocks of {}", t.name, t.ne[0],
           tr.name, tr.block);
  }
  std::string head = "GGUF";
  put_u32(head, 3);
  put_u64(head, tensors_.size());
  put_u64(head, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_str(head, k);
    put_u32(head, uint32_t(v.type()));
    if (v.is_array()) {
      put_u32(head, uint32_t(v.elem()));
      put_u64(head, v.count());
      for (const std::string& s : v.string_array()) put_str(head, s);
    } else if (v.type() == ValueType::String) {
      put_str(head, *v.as_string());
    }
    head.append(reinterpret_cast<const char*>(v.bytes().data()), v.bytes().size());
  }
  uint64_t offset = 0;
  for (const Pending& t : tensors_) {
    put_str(head, t.name);
    put_u32(head, uint32_t(t.ne.size()));
    for (int64_t d : t.ne) put_u64(head, uint64_t(d));
    put_u32(head, uint32_t(t.type));
    put_u64(head, offset);
    offset += pad_to(t.bytes, alignment_);
  }
  head.append(pad_to(head.size(), alignment_) - head.size(), '\0');

  AtomicFileWriter w(path);
  w.write(head);
  static const char zeros[64] = {};
  std::vector<uint8_t> buf;
  for (const Pending& t : tensors_) {
    buf.assign(size_t(t.bytes), 0);
    t.fill(buf.data());
    w.write(buf.data(), buf.size());
    for (uint64_t pad = pad_to(t.bytes, alignment_) - t.bytes; pad > 0;) {
      const size_t n = size_t(std::min<uint64_t>(pad, sizeof zeros));
      w.write(zeros, n);
      pad -= n;
    }
  }
  w.commit();
}

}  // namespace lrq::gguf
