// Matrix-level quantization building blocks: PackedWeight (layout, decode, matmul), RTN, NF, GPTQ.
// References are written out here independently: the documented bit layout byte by byte, the
// value formulas, a plain min/max RTN loop, brute-force nearest codewords, dense products in
// double, and the published NF4 table.
#include <algorithm>
#include <cmath>
#include <random>

#include "backend/ops.h"
#include "quant/kernels/gptq_solver.h"
#include "quant/kernels/nf_codebook.h"
#include "formats/packed_weight.h"
#include "quant/kernels/rtn_grid.h"
#include "test_util.h"

using namespace lrq;

namespace {

const int kBits[] = {2, 3, 4, 8};
const QuantFormat kFormats[] = {QuantFormat::Affine, QuantFormat::Symmetric, QuantFormat::Codebook};

Tensor randn(Shape s, uint64_t seed, float mean = 0.f, float sd = 1.f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(mean, sd);
  Tensor x = Tensor::empty(s);
  for (int64_t i = 0; i < x.numel(); ++i) x.at<float>(i) = d(g);
  return x;
}

float f16r(float x) { return f16_to_f32(f32_to_f16(x)); }

// A random packed matrix of the given format, plus its unpacked codes.
struct Sample {
  PackedWeight w;
  Tensor codes, scales, offsets, codebook;
};

Sample random_packed(int64_t rows, int64_t cols, int bits, int64_t group, QuantFormat f,
                     uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  Sample s;
  s.codes = Tensor::empty({rows, cols}, DType::U8);
  for (int64_t i = 0; i < s.codes.numel(); ++i) s.codes.at<uint8_t>(i) = uint8_t(code(g));
  s.scales = Tensor::empty({rows, cols / group}, DType::F16);
  for (int64_t i = 0; i < s.scales.numel(); ++i)
    s.scales.at<uint16_t>(i) = f32_to_f16(0.01f + 0.05f * std::fabs(u(g)));
  if (f == QuantFormat::Affine) {
    s.offsets = Tensor::empty({rows, cols / group}, DType::F16);
    for (int64_t i = 0; i < s.offsets.numel(); ++i) s.offsets.at<uint16_t>(i) = f32_to_f16(-0.3f * std::fabs(u(g)));
  }
  if (f == QuantFormat::Codebook) {
    s.codebook = Tensor::empty({int64_t(1) << bits});
    for (int64_t i = 0; i < s.codebook.numel(); ++i) s.codebook.at<float>(i) = u(g);
  }
  s.w = PackedWeight::pack(s.codes, s.scales, s.offsets, s.codebook, bits, group, f);
  return s;
}

// The documented value of code c at (r, k).
float value_of(const Sample& s, int64_t r, int64_t k) {
  const PackedWeight& w = s.w;
  const int64_t gi = r * w.ngroups() + k / w.group();
  const int c = s.codes.at<uint8_t>(r * w.cols() + k);
  const float sc = f16_to_f32(s.scales.at<uint16_t>(gi));
  switch (w.format()) {
    case QuantFormat::Affine: return float(c) * sc + f16_to_f32(s.offsets.at<uint16_t>(gi));
    case QuantFormat::Symmetric: return float(c - (1 << (w.bits() - 1))) * sc;
    case QuantFormat::Codebook: return s.codebook.at<float>(c) * sc;
  }
  return 0;
}

// The packed bytes of one 32-value chunk, written from the layout description in packed.h.
std::vector<uint8_t> documented_chunk(const uint8_t* c, int bits) {
  std::vector<uint8_t> p(size_t(4 * bits), 0);
  for (int k = 0; k < 32; ++k) {
    switch (bits) {
      case 8: p[size_t(k)] = c[k]; break;
      case 4: p[size_t(k % 16)] |= uint8_t(c[k] << (k < 16 ? 0 : 4)); break;
      case 2: p[size_t(k % 8)] |= uint8_t(c[k] << 2 * (k / 8)); break;
      case 3:
        for (int i = 0; i < 3; ++i) {
          const int bit = 12 * (k % 8) + 3 * (k / 8) + i;
          p[size_t(bit / 8)] |= uint8_t((c[k] >> i & 1) << (bit % 8));
        }
        break;
    }
  }
  return p;
}

// Runs f once with the SIMD kernels (where the CPU has them) and once with the scalar ones.
template <class F>
void for_each_kernel(F f) {
  const bool simd = ops::packed_simd_active();
  for (bool scalar : {false, true}) {
    if (!scalar && !simd) continue;
    ops::packed_force_scalar(scalar);
    SCOPED_TRACE(scalar ? "scalar kernels" : "AVX2 kernels");
    f();
  }
  ops::packed_force_scalar(false);
}

// ||A||_F of (W - Q) X for W, Q [rows, n] and X [n, T], in double.
double output_error(const Tensor& W, const Tensor& Q, const Tensor& X) {
  Tensor D = Tensor::empty(W.shape(), DType::F64);
  for (int64_t i = 0; i < W.numel(); ++i) D.at<double>(i) = double(W.at<float>(i)) - Q.at<float>(i);
  Tensor Xd = X.to(DType::F64), R = Tensor::zeros({W.dim(0), X.dim(1)}, DType::F64);
  ops::gemm(D, false, Xd, false, R);
  double s = 0;
  for (int64_t i = 0; i < R.numel(); ++i) s += R.at<double>(i) * R.at<double>(i);
  return std::sqrt(s);
}

// Q with the columns put back in input order (stored column j holds input column perm[j]).
Tensor unpermute(const Tensor& Q, const std::vector<int32_t>& perm) {
  if (perm.empty()) return Q;
  Tensor out = Tensor::empty(Q.shape());
  const int64_t rows = Q.dim(0), n = Q.dim(1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) out.at<float>(r * n + perm[size_t(j)]) = Q.at<float>(r * n + j);
  return out;
}

// Calibration inputs with correlated channels of different scales: X = diag(c) M Z. (With much
// wider scale spreads, 2-bit GPTQ without act-order falls to RTN's error: measured 1.03x RTN at
// log-sd 0.7, 0.88x at 0.3; act-order stays well below.)
Tensor correlated_inputs(int64_t n, int64_t T, uint64_t seed) {
  Tensor M = randn({n, n}, seed), Z = randn({n, T}, seed + 1), X = Tensor::zeros({n, T});
  for (int64_t i = 0; i < n; ++i) M.at<float>(i * n + i) += 3.f;
  ops::gemm(M, false, Z, false, X);
  std::mt19937_64 g(seed + 2);
  std::normal_distribution<float> d;
  for (int64_t i = 0; i < n; ++i) {
    const float c = std::exp(0.3f * d(g));
    for (int64_t t = 0; t < T; ++t) X.at<float>(i * T + t) *= c;
  }
  return X;
}

Tensor hessian(const Tensor& X) {
  Tensor Xd = X.to(DType::F64), H = Tensor::zeros({X.dim(0), X.dim(0)}, DType::F64);
  ops::gemm(Xd, false, Xd, true, H, 1.0 / double(X.dim(1)));
  return H;
}

Tensor identity_f64(int64_t n) {
  Tensor H = Tensor::zeros({n, n}, DType::F64);
  for (int64_t i = 0; i < n; ++i) H.at<double>(i * n + i) = 1.0;
  return H;
}

// GPTQ without lazy batches, in double: after each column, every later column is updated at
// once (W[:, j] -= err * U_ij), the form the lazy-batch algorithm is an exact rearrangement of.
// Groups start every `group` columns; no act-order. Returns the codes [rows, n].
std::vector<int> reference_gptq(const Tensor& W, const Tensor& H, int bits, int64_t group) {
  const int64_t rows = W.dim(0), n = W.dim(1);
  const double mean = [&] {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += H.at<double>(i * n + i);
    return s / double(n);
  }();
  Tensor U = H.clone();
  for (int64_t i = 0; i < n; ++i) U.at<double>(i * n + i) += 0.01 * mean;
  EXPECT_TRUE(ops::spd_inverse(U) && ops::cholesky(U));  // lower L; U_ij = L_ji
  std::vector<double> w(size_t(rows * n));
  for (int64_t i = 0; i < rows * n; ++i) w[size_t(i)] = W.at<float>(i);
  std::vector<int> codes(size_t(rows * n));
  const float maxq = float((1 << bits) - 1);
  for (int64_t r = 0; r < rows; ++r) {
    double* wr = w.data() + r * n;
    float s = 1, o = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (i % group == 0) {
        float lo = float(wr[i]), hi = lo;
        for (int64_t k = i; k < i + group; ++k) lo = std::min(lo, float(wr[k])), hi = std::max(hi, float(wr[k]));
        minmax_grid(lo, hi, bits, false, 1.f, &s, &o);
      }
      const float q = quantize_code(float(wr[i]), s, o, maxq);
      codes[size_t(r * n + i)] = int(q);
      const double err = (wr[i] - dequantize_code(q, s, o)) / U.at<double>(i * n + i);
      for (int64_t j = i + 1; j < n; ++j) wr[j] -= err * U.at<double>(j * n + i);
    }
  }
  return codes;
}

}  // namespace

// ------------------------------------------------------------------ PackedWeight
TEST(Packed, LayoutIsAsDocumented) {
  for (int bits : kBits) {
    Sample s = random_packed(3, 64, bits, 32, QuantFormat::Symmetric, 10 + bits);
    ASSERT_EQ(s.w.codes().dim(1), 64 * bits / 8);
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t ch = 0; ch < 2; ++ch) {
        auto want = documented_chunk(s.codes.data<uint8_t>() + r * 64 + ch * 32, bits);
        const uint8_t* got = s.w.codes().data<uint8_t>() + r * s.w.codes().dim(1) + ch * 4 * bits;
        for (int i = 0; i < 4 * bits; ++i) ASSERT_EQ(got[i], want[size_t(i)]) << bits << " bits, byte " << i;
      }
  }
}

TEST(Packed, RoundTripEveryBitsAndFormat) {
  for (int bits : kBits)
    for (QuantFormat f : kFormats)
      for (int64_t group : {32, 64, 192}) {
        SCOPED_TRACE(::testing::Message() << bits << " bits, " << quant_format_name(f) << ", g" << group);
        const int64_t rows = 7, cols = 192;
        Sample s = random_packed(rows, cols, bits, group, f, uint64_t(bits * 100 + group));
        Tensor back = s.w.unpack_codes();
        for (int64_t i = 0; i < back.numel(); ++i) ASSERT_EQ(back.at<uint8_t>(i), s.codes.at<uint8_t>(i));
        size_t want = size_t(rows * cols * bits / 8 + rows * (cols / group) * 2);
        if (f == QuantFormat::Affine) want += size_t(rows * (cols / group) * 2);
        if (f == QuantFormat::Codebook) want += size_t(4 << bits);
        EXPECT_EQ(s.w.storage_bytes(), want);
        for_each_kernel([&] {
          Tensor d = s.w.dequantize();
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t k = 0; k < cols; ++k) ASSERT_EQ(d.at<float>(r * cols + k), value_of(s, r, k));
        });
        // Rebuilding from the stored tensors gives the same object.
        PackedWeight w2 = PackedWeight::from_tensors(s.w.codes(), s.w.scales(), s.w.offsets(),
                                                     s.w.codebook(), bits, group, f, "test");
        EXPECT_EQ(w2.rows(), rows);
        EXPECT_EQ(w2.cols(), cols);
      }
}

TEST(Packed, MatmulMatchesDequantizedProduct) {
  const int64_t rows = 37, cols = 256;
  for (int bits : kBits)
    for (QuantFormat f : kFormats)
      for (int64_t group : {64, 256}) {
        Sample s = random_packed(rows, cols, bits, group, f, uint64_t(bits * 7 + group));
        Tensor Wd = s.w.dequantize();
        for (int64_t T : {1, 3, 5, 8, 17})
          for (bool acc : {false, true}) {
            SCOPED_TRACE(::testing::Message() << bits << " bits, " << quant_format_name(f) << ", g"
                                              << group << ", T=" << T << (acc ? ", accumulate" : ""));
            // A non-zero mean in x exercises the offset term.
            Tensor x = randn({T, cols}, uint64_t(T), 0.5f), y0 = randn({T, rows}, 99);
            for_each_kernel([&] {
              Tensor y = y0.clone();
              s.w.matmul(x, y, acc);
              double num = 0, den = 0;
              for (int64_t t = 0; t < T; ++t)
                for (int64_t r = 0; r < rows; ++r) {
                  double ref = 0, mag = 0;
                  for (int64_t k = 0; k < cols; ++k) {
                    const double p = double(x.at<float>(t * cols + k)) * Wd.at<float>(r * cols + k);
                    ref += p;
                    mag += std::fabs(p);
                  }
                  if (acc) ref += y0.at<float>(t * rows + r);
                  const double diff = y.at<float>(t * rows + r) - ref;
                  ASSERT_LE(std::fabs(diff), 1e-5 * mag + 1e-6) << "t=" << t << " r=" << r;
                  num += diff * diff;
                  den += ref * ref;
                }
              EXPECT_LE(std::sqrt(num / den), 1e-5);
            });
          }
      }
}

TEST(Packed, MatmulOverSeveralSlabs) {
  // 4096 columns make a 2 MiB fp32 slab 128 rows: 300 rows are two full slabs and a partial one.
  const int64_t rows = 300, cols = 4096, T = 9;
  Sample s = random_packed(rows, cols, 3, 128, QuantFormat::Affine, 21);
  Tensor Wd = s.w.dequantize(), x = randn({T, cols}, 22), y = randn({T, rows}, 23), y0 = y.clone();
  s.w.matmul(x, y, true);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double ref = y0.at<float>(t * rows + r), mag = 0;
      for (int64_t k = 0; k < cols; ++k) {
        const double p = double(x.at<float>(t * cols + k)) * Wd.at<float>(r * cols + k);
        ref += p;
        mag += std::fabs(p);
      }
      ASSERT_NEAR(y.at<float>(t * rows + r), ref, 1e-5 * mag + 1e-5) << "t=" << t << " r=" << r;
    }
}

TEST(Packed, FromTensorsRejectsBadInput) {
  Sample a = random_packed(4, 128, 4, 64, QuantFormat::Affine, 1);
  Sample c = random_packed(4, 128, 3, 64, QuantFormat::Codebook, 2);
  const PackedWeight& w = a.w;
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("ckpt.safetensors"), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  const char* where = "ckpt.safetensors";
  auto build = [&](const Tensor& codes, const Tensor& sc, const Tensor& off, const Tensor& cb,
                   int bits, int64_t group, QuantFormat f) {
    return [=] { PackedWeight::from_tensors(codes, sc, off, cb, bits, group, f, where); };
  };
  const QuantFormat A = QuantFormat::Affine, S = QuantFormat::Symmetric, C = QuantFormat::Codebook;
  expect_error(build(Tensor(), w.scales(), w.offsets(), {}, 4, 64, A), "codes tensor missing");
  expect_error(build(Tensor::zeros(w.codes().shape(), DType::I8), w.scales(), w.offsets(), {}, 4, 64, A), "U8");
  expect_error(build(w.codes(), w.scales(), w.offsets(), {}, 5, 64, A), "bits");
  expect_error(build(w.codes(), w.scales(), w.offsets(), {}, 3, 64, A), "chunks");  // 64 bytes at 3 bits
  expect_error(build(w.codes(), w.scales(), w.offsets(), {}, 4, 48, A), "group");
  expect_error(build(w.codes(), w.scales(), w.offsets(), {}, 4, 96, A), "multiple of group");
  expect_error(build(w.codes(), w.scales().reshape({2, 4}), w.offsets(), {}, 4, 64, A), "scales");
  expect_error(build(w.codes(), w.scales().to(DType::F32), w.offsets(), {}, 4, 64, A), "scales");
  Tensor inf = w.scales().clone();
  inf.at<uint16_t>(3) = 0x7c00;
  expect_error(build(w.codes(), inf, w.offsets(), {}, 4, 64, A), "inf or NaN");
  expect_error(build(w.codes(), w.scales(), Tensor(), {}, 4, 64, A), "offsets tensor missing");
  expect_error(build(w.codes(), w.scales(), w.offsets(), {}, 4, 64, S), "offsets given");
  expect_error(build(c.w.codes(), c.w.scales(), {}, Tensor(), 3, 64, C), "codebook tensor missing");
  expect_error(build(c.w.codes(), c.w.scales(), {}, Tensor::zeros({4}), 3, 64, C), "codebook");
  Tensor nan_cb = c.codebook.clone();
  nan_cb.at<float>(5) = std::nanf("");
  expect_error(build(c.w.codes(), c.w.scales(), {}, nan_cb, 3, 64, C), "codebook contains");
  expect_error(build(c.w.codes(), c.w.scales(), {}, c.codebook, 3, 64, S), "codebook given");
  // Codes that do not fit, and products of the wrong shape.
  Tensor big = a.codes.clone();
  big.at<uint8_t>(0) = 16;
  EXPECT_THROW(PackedWeight::pack(big, a.scales, a.offsets, {}, 4, 64, A), Error);
  EXPECT_THROW(w.matmul(Tensor::zeros({2, 64}), Tensor::zeros({2, 4})), Error);
  EXPECT_THROW(w.matmul(Tensor::zeros({2, 128}), Tensor::zeros({3, 4})), Error);
}

// ------------------------------------------------------------------ RTN
TEST(Rtn, MatchesScalarMinMaxReference) {
  const int64_t rows = 9, cols = 256;
  Tensor W = randn({rows, cols}, 5, 0.f, 0.02f);
  W.at<float>(3) = 0.3f;  // an outlier
  for (int bits : kBits)
    for (int64_t group : {32, 128, 0})
      for (bool sym : {false, true}) {
        SCOPED_TRACE(::testing::Message() << bits << " bits, g" << group << (sym ? " sym" : " asym"));
        RtnOptions opt;
        opt.bits = bits;
        opt.group = group;
        opt.symmetric = sym;
        PackedWeight q = rtn_quantize(W, opt);
        const int64_t g = group ? group : cols, ng = cols / g;
        ASSERT_EQ(q.group(), g);
        Tensor codes = q.unpack_codes();
        const int maxq = (1 << bits) - 1, m = 1 << (bits - 1);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t gi = 0; gi < ng; ++gi) {
            const float* w = W.data<float>() + r * cols + gi * g;
            float mn = 0, mx = 0;  // the range always includes 0
            for (int64_t k = 0; k < g; ++k) mn = std::min(mn, w[k]), mx = std::max(mx, w[k]);
            float s, off = 0;
            if (sym) {
              s = std::max(f16r(std::max(-mn, mx) / float(m - 1)), 0x1p-14f);
            } else {
              s = std::max(f16r((mx - mn) / float(maxq)), 0x1p-14f);
              const float zero = std::min(std::max(std::nearbyint(-mn / s), 0.f), float(maxq));
              off = f16r(-zero * s);
              ASSERT_EQ(f16_to_f32(q.offsets().at<uint16_t>(r * ng + gi)), off);
            }
            ASSERT_EQ(f16_to_f32(q.scales().at<uint16_t>(r * ng + gi)), s);
            for (int64_t k = 0; k < g; ++k) {
              int code;
              if (sym)
                code = int(std::min(std::max(std::nearbyint(w[k] / s), float(-m)), float(m - 1))) + m;
              else
                code = int(std::min(std::max(std::nearbyint((w[k] - off) / s), 0.f), float(maxq)));
              ASSERT_EQ(codes.at<uint8_t>(r * cols + gi * g + k), code) << "r=" << r << " k=" << k;
            }
          }
      }
}

TEST(Rtn, ClipSearchNeverIncreasesWeightedError) {
  const int64_t rows = 16, cols = 256;
  // Heavy tails (Student-t like) make clipping pay off.
  Tensor W = randn({rows, cols}, 6, 0.f, 0.02f), chi = randn({rows, cols}, 7);
  for (int64_t i = 0; i < W.numel(); ++i) W.at<float>(i) /= 0.3f + std::fabs(chi.at<float>(i));
  Tensor imp = Tensor::empty({cols});
  std::mt19937_64 g(8);
  std::exponential_distribution<float> e;
  for (int64_t i = 0; i < cols; ++i) imp.at<float>(i) = e(g);
  for (int bits : {2, 3, 4})
    for (bool sym : {false, true}) {
      SCOPED_TRACE(::testing::Message() << bits << " bits" << (sym ? " sym" : " asym"));
      RtnOptions opt;
      opt.bits = bits;
      opt.group = 64;
      opt.symmetric = sym;
      Tensor plain = rtn_quantize(W, opt, imp).dequantize();
      opt.clip_search = true;
      Tensor clipped = rtn_quantize(W, opt, imp).dequantize();
      double total_plain = 0, total_clip = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t gi = 0; gi < cols / 64; ++gi) {
          double ep = 0, ec = 0;
          for (int64_t k = gi * 64; k < gi * 64 + 64; ++k) {
            const double w = W.at<float>(r * cols + k), h = imp.at<float>(k);
            ep += h * std::pow(w - plain.at<float>(r * cols + k), 2);
            ec += h * std::pow(w - clipped.at<float>(r * cols + k), 2);
          }
          EXPECT_LE(ec, ep * (1 + 1e-12)) << "r=" << r << " group " << gi;
          total_plain += ep;
          total_clip += ec;
        }
      EXPECT_LT(total_clip, 0.97 * total_plain);  // the search does find better ranges
    }
}

TEST(Rtn, RejectsBadInput) {
  RtnOptions opt;
  EXPECT_THROW(rtn_quantize(randn({4, 100}, 1), opt), Error);  // 100 % 128
  opt.group = 48;
  EXPECT_THROW(rtn_quantize(randn({4, 96}, 1), opt), Error);
  opt.group = 32;
  opt.bits = 5;
  EXPECT_THROW(rtn_quantize(randn({4, 96}, 1), opt), Error);
  opt.bits = 4;
  Tensor W = randn({4, 96}, 1);
  W.at<float>(7) = std::nanf("");
  EXPECT_THROW(rtn_quantize(W, opt), Error);
  EXPECT_THROW(rtn_quantize(randn({4, 96}, 1), opt, Tensor::zeros({95})), Error);
}

// ------------------------------------------------------------------ NormalFloat
TEST(Nf, Nf4MatchesQloraTable) {
  const double published[16] = {-1,      -0.6962, -0.5251, -0.3949, -0.2844, -0.1848,
                                -0.0911, 0,       0.0796,  0.1609,  0.2461,  0.3379,
                                0.4407,  0.5626,  0.7230,  1};
  Tensor cb = nf_codebook(4);
  ASSERT_EQ(cb.numel(), 16);
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(cb.at<float>(i), published[i], 1e-4) << i;
  EXPECT_EQ(cb.at<float>(7), 0.f);
}

TEST(Nf, Nf3Construction) {
  Tensor cb = nf_codebook(3);
  ASSERT_EQ(cb.numel(), 8);
  EXPECT_EQ(cb.at<float>(0), -1.f);
  EXPECT_EQ(cb.at<float>(3), 0.f);  // 3 negative levels, exact zero, 4 positive
  EXPECT_EQ(cb.at<float>(7), 1.f);
  for (int i = 0; i + 1 < 8; ++i) EXPECT_LT(cb.at<float>(i), cb.at<float>(i + 1));
  // Positive levels are Phi^-1 at 4 equally spaced probabilities from p = 1 - (1/14 + 1/16)/2
  // down to 1/2, divided by Phi^-1(p): the second largest is Phi^-1(0.5 + 3(p - 1/2)/4) /
  // Phi^-1(p) = 0.933724 / 1.498788 (Python statistics.NormalDist().inv_cdf).
  EXPECT_NEAR(cb.at<float>(6), 0.933724 / 1.498788, 1e-5);
}

TEST(Nf, QuantizeIsNearestCodewordOfBlockAbsmax) {
  const int64_t rows = 6, cols = 256;
  Tensor W = randn({rows, cols}, 9, 0.f, 0.05f);
  for (int bits : {3, 4}) {
    NfOptions opt;
    opt.bits = bits;
    PackedWeight q = nf_quantize(W, opt);
    ASSERT_EQ(q.format(), QuantFormat::Codebook);
    ASSERT_EQ(q.group(), 64);
    Tensor codes = q.unpack_codes(), cb = nf_codebook(bits);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < cols / 64; ++b) {
        float amax = 0;
        for (int64_t k = b * 64; k < b * 64 + 64; ++k) amax = std::max(amax, std::fabs(W.at<float>(r * cols + k)));
        const float s = f16r(amax);
        ASSERT_EQ(f16_to_f32(q.scales().at<uint16_t>(r * 4 + b)), s);
        for (int64_t k = b * 64; k < b * 64 + 64; ++k) {
          const float v = W.at<float>(r * cols + k) / s;
          int best = 0;
          for (int c = 1; c < cb.numel(); ++c)
            if (std::fabs(v - cb.at<float>(c)) < std::fabs(v - cb.at<float>(best))) best = c;
          ASSERT_EQ(codes.at<uint8_t>(r * cols + k), best);
        }
      }
  }
}

// ------------------------------------------------------------------ GPTQ
TEST(Gptq, BeatsRtnOnCorrelatedInputs) {
  const int64_t rows = 64, n = 256, T = 2048;
  Tensor W = randn({rows, n}, 11), X = correlated_inputs(n, T, 12), H = hessian(X);
  for (int bits : {2, 3, 4}) {
    RtnOptions grid;
    grid.bits = bits;
    grid.group = 64;
    const double rtn = output_error(W, rtn_quantize(W, grid).dequantize(), X);
    for (int mode = 0; mode < 3; ++mode) {
      GptqOptions opt;
      opt.grid = grid;
      opt.act_order = mode > 0;
      opt.static_groups = mode == 2;
      opt.block = 32;  // several lazy blocks
      GptqResult res = gptq_quantize(W, H, opt);
      EXPECT_TRUE(res.warning.empty()) << res.warning;
      EXPECT_EQ(res.perm.empty(), mode != 1);
      const double err = output_error(W, unpermute(res.q.dequantize(), res.perm), X);
      EXPECT_LT(err, 0.92 * rtn) << bits << " bits, mode " << mode << ": gptq " << err << " rtn " << rtn;
      EXPECT_GT(res.loss, 0);
    }
  }
}

TEST(Gptq, LazyBatchesMatchPlainColumnLoop) {
  const int64_t rows = 48, n = 256;
  Tensor W = randn({rows, n}, 17), H = hessian(correlated_inputs(n, 1024, 18));
  for (int bits : {2, 3, 4, 8}) {
    std::vector<int> ref = reference_gptq(W, H, bits, 64);
    GptqOptions opt;
    opt.grid.bits = bits;
    opt.grid.group = 64;
    opt.block = 32;
    Tensor codes = gptq_quantize(W, H, opt).q.unpack_codes();
    int64_t differ = 0;
    for (int64_t i = 0; i < codes.numel(); ++i) differ += codes.at<uint8_t>(i) != ref[size_t(i)];
    // Float32 vs double rounding flips a few near-tie codes; a wrong update flips most of them.
    EXPECT_LE(double(differ) / double(codes.numel()), 0.01) << bits << " bits: " << differ << " differ";
  }
}

TEST(Gptq, IdentityHessianReducesToRtn) {
  const int64_t rows = 40, n = 192;
  Tensor W = randn({rows, n}, 13, 0.f, 0.03f), H = identity_f64(n);
  for (int bits : kBits)
    for (int64_t group : {32, 64, 0})
      for (bool sym : {false, true})
        for (bool clip : {false, true}) {
          SCOPED_TRACE(::testing::Message() << bits << " bits, g" << group << (sym ? " sym" : " asym")
                                            << (clip ? " clip" : ""));
          GptqOptions opt;
          opt.grid.bits = bits;
          opt.grid.group = group;
          opt.grid.symmetric = sym;
          opt.grid.clip_search = clip;
          opt.grid.clip_steps = 8;
          opt.act_order = clip;  // stable order on a constant diagonal: the identity
          opt.block = 48;
          GptqResult g = gptq_quantize(W, H, opt);
          PackedWeight r = rtn_quantize(W, opt.grid);
          for (size_t j = 0; j < g.perm.size(); ++j) ASSERT_EQ(g.perm[j], int32_t(j));
          Tensor cg = g.q.unpack_codes(), cr = r.unpack_codes();
          for (int64_t i = 0; i < cg.numel(); ++i) ASSERT_EQ(cg.at<uint8_t>(i), cr.at<uint8_t>(i)) << i;
          for (int64_t i = 0; i < r.scales().numel(); ++i)
            ASSERT_EQ(g.q.scales().at<uint16_t>(i), r.scales().at<uint16_t>(i));
        }
}

TEST(Gptq, DeadInputsAreZeroed) {
  const int64_t rows = 32, n = 128, T = 512;
  Tensor W = randn({rows, n}, 14), X = correlated_inputs(n, T, 15);
  for (int64_t i : {5, 70, 127}) {
    for (int64_t t = 0; t < T; ++t) X.at<float>(i * T + t) = 0;
    for (int64_t r = 0; r < rows; ++r) W.at<float>(r * n + i) = 5.f;  // large, but never used
  }
  Tensor H = hessian(X);
  for (bool sym : {false, true}) {
    GptqOptions opt;
    opt.grid.bits = 3;
    opt.grid.group = 32;
    opt.grid.symmetric = sym;
    GptqResult res = gptq_quantize(W, H, opt);
    EXPECT_TRUE(res.warning.empty());
    Tensor Q = res.q.dequantize();
    for (int64_t i : {5, 70, 127})
      for (int64_t r = 0; r < rows; ++r) {
        const float s = f16_to_f32(res.q.scales().at<uint16_t>(r * 4 + i / 32));
        EXPECT_LE(std::fabs(Q.at<float>(r * n + i)), sym ? 0.f : 0.5f * s) << "col " << i;
      }
    RtnOptions grid = opt.grid;
    EXPECT_LT(output_error(W, Q, X), output_error(W, rtn_quantize(W, grid).dequantize(), X));
  }
}

TEST(Gptq, RaisesDampingWhenNeededAndRejectsBadHessians) {
  const int64_t n = 64;
  Tensor W = randn({8, n}, 16);
  // Eigenvalues 1 +- 1.05 in the (0, 1) block: not PD at damp 0.01, PD at 0.1.
  Tensor H = identity_f64(n);
  H.at<double>(1) = H.at<double>(n) = 1.05;
  GptqOptions opt;
  opt.grid.group = 32;
  GptqResult res = gptq_quantize(W, H, opt);
  EXPECT_NE(res.warning.find("used damping 0.1"), std::string::npos) << res.warning;
  H.at<double>(1) = H.at<double>(n) = 1e9;  // hopeless
  EXPECT_THROW(gptq_quantize(W, H, opt), Error);
  Tensor bad = identity_f64(n);
  bad.at<double>(3) = std::nan("");
  EXPECT_THROW(gptq_quantize(W, bad, opt), Error);
  EXPECT_THROW(gptq_quantize(W, identity_f64(n).to(DType::F32), opt), Error);
  EXPECT_THROW(gptq_quantize(W, identity_f64(n + 1), opt), Error);
}
