// LoRDS kernels on the GPU against the CPU and an F64 product: dequantization bit for bit (the
// same fma chain), the tensor-core decode GEMV and the slab prefill under an error budget, the
// refinement's elementwise passes exactly, and Adam to rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "backend/cuda/cuda_ops.h"
#include "backend/ops.h"
#include "formats/lords_linear.h"
#include "quant/kernels/nf_codebook.h"
#include "quant/objective.h"
#include "test_util.h"

using namespace lrq;
using lrq::test::random_codes;
using lrq::test::randn;

namespace {

// Factors with both signs (the kernels must not assume positive scales), rounded to F16.
Tensor factor(int64_t r, int64_t c, uint64_t seed) {
  return randn({r, c}, seed, 0.3).to(DType::F16);
}

std::unique_ptr<LordsLinear> make(int64_t m, int64_t n, int64_t rank, int bits, uint64_t seed) {
  Tensor book = bits <= 4 ? nf_codebook(bits) : randn({256}, seed + 3).to(DType::F32);
  if (bits > 4) std::sort(book.data<float>(), book.data<float>() + 256);  // packing wants it ascending
  return LordsLinear::pack(random_codes(m, n, bits, seed), factor(m, rank, seed + 1),
                           factor(rank, n, seed + 2), book, bits);
}

double rel(const Tensor& a, const Tensor& b) {
  return std::sqrt(ops::norm_stats(difference(a, b)).sumsq) /
         std::sqrt(ops::norm_stats(b).sumsq);
}

// y = x W^T in F64 from the dequantized F32 matrix.
Tensor reference(const Tensor& W, const Tensor& x) {
  Tensor y = Tensor::empty({x.dim(0), W.dim(0)}, DType::F64);
  const Tensor Wd = W.to(DType::F64), xd = x.to(DType::F64);
  ops::gemm(xd, false, Wd, true, y);
  return y.to(DType::F32);
}

}  // namespace

// Shapes off every tile: 200 rows (not a multiple of 16 or 128), 352 columns (11 chunks: the
// last 256-column slab is partial), ranks below, at and across the 16-wide k slices, and 70
// (above the fused kernel's 64: the slab path).
TEST(LordsGpu, DequantizeIsBitIdenticalToCpu) {
  REQUIRE_GPU();
  for (int bits : {2, 3, 4, 8})
    for (int64_t rank : {1, 5, 16, 23, 40, 70}) {
      const auto l = make(200, 352, rank, bits, uint64_t(bits * 100 + rank));
      const Tensor c = l->dequantize();
      const Tensor g = l->to(Device::CUDA)->dequantize().to(Device::CPU);
      ASSERT_EQ(c.shape(), g.shape());
      EXPECT_EQ(std::memcmp(c.raw(), g.raw(), size_t(c.numel()) * 4), 0)
          << "b" << bits << " r" << rank;
    }
}

// Exact kernels: every product exact, within 2e-6 of F64. The default BF16 prefill (T > 8; x
// and the dequantized weights in BF16, 2^-9 each) within 1e-2; decode (T <= 8), 8-bit codes and
// ranks over 64 stay exact in both modes.
TEST(LordsGpu, MatmulMatchesF64ForDecodeAndPrefill) {
  REQUIRE_GPU();
  for (bool exact : {true, false}) {
    const bool was = ops::set_exact_kernels(exact);
    for (int bits : {2, 3, 4, 8})
      for (int64_t rank : {5, 16, 23, 40, 70})
        for (int64_t T : {1, 2, 3, 5, 8, 17}) {
          const bool fast = !exact && bits <= 4 && rank <= 64;
          const double tol = fast && T > 8 ? 1e-2 : 2e-6;
          const auto l = make(200, 352, rank, bits, uint64_t(bits * 1000 + rank * 10 + T));
          const auto lg = l->to(Device::CUDA);
          const Tensor W = l->dequantize();
          const Tensor x = randn({T, 352}, uint64_t(T));
          const Tensor ref = reference(W, x);
          Tensor y = Tensor::empty({T, 200}, DType::F32, Device::CUDA);
          lg->forward(x.to(Device::CUDA), y);
          const double e = rel(y.to(Device::CPU), ref);
          EXPECT_LT(e, tol) << "exact " << exact << " b" << bits << " r" << rank << " T" << T;
          // The fast paths round: they must, or the budget above is not what they cost.
          if (fast && T > 8) {
            EXPECT_GT(e, 1e-7) << "b" << bits << " r" << rank << " T" << T;
          }
          // Accumulation adds to what y holds.
          const Tensor y0 = randn({T, 200}, 77);
          Tensor ya = y0.to(Device::CUDA);
          ops::lords_matmul(static_cast<const LordsLinear&>(*lg).view(), x.to(Device::CUDA), ya,
                            true);
          Tensor want = ref.clone();
          ops::add_inplace(want, y0);
          EXPECT_LT(rel(ya.to(Device::CPU), want), tol)
              << "acc exact " << exact << " b" << bits << " r" << rank;
        }
    ops::set_exact_kernels(was);
  }
}

// The decode kernel's completion counters are reused across launches of different shapes;
// repeated calls must give the same bits.
TEST(LordsGpu, DecodeIsRepeatableAcrossShapes) {
  REQUIRE_GPU();
  const auto a = make(4096, 512, 16, 4, 1)->to(Device::CUDA);
  const auto b = make(130, 1024, 23, 3, 2)->to(Device::CUDA);
  const Tensor xa = randn({1, 512}, 3).to(Device::CUDA), xb = randn({4, 1024}, 4).to(Device::CUDA);
  Tensor ya = Tensor::empty({1, 4096}, DType::F32, Device::CUDA);
  Tensor yb = Tensor::empty({4, 130}, DType::F32, Device::CUDA);
  a->forward(xa, ya);
  b->forward(xb, yb);
  const Tensor ya0 = ya.to(Device::CPU), yb0 = yb.to(Device::CPU);
  for (int it = 0; it < 3; ++it) {
    b->forward(xb, yb);
    a->forward(xa, ya);
    EXPECT_EQ(std::memcmp(ya.to(Device::CPU).raw(), ya0.raw(), 4096 * 4), 0);
    EXPECT_EQ(std::memcmp(yb.to(Device::CPU).raw(), yb0.raw(), 4 * 130 * 4), 0);
  }
}

TEST(LordsGpu, AssignPassIsIdenticalToCpu) {
  REQUIRE_GPU();
  const int64_t m = 150, n = 96;
  for (int bits : {2, 3, 4}) {
    const Tensor book = nf_codebook(bits);
    const Tensor W = randn({m, n}, 11, 0.02);
    Tensor S = randn({m, n}, 12, 0.01);
    S.data<float>()[7] = 0.f;  // |S| below 1e-30: the entry nearest 0
    const Tensor h = randn({n}, 13);
    for (bool weighted : {false, true}) {
      const Tensor hw = weighted ? h : Tensor();
      Tensor cc = Tensor::empty({m, n}, DType::U8), dc = Tensor::empty({m, n}),
             gc = Tensor::empty({m, n});
      const double lc = ops::lords_assign(W, S, book, hw, cc, dc, gc);
      const Device cu = Device::CUDA;
      Tensor cg = Tensor::empty({m, n}, DType::U8, cu), dg = Tensor::empty({m, n}, DType::F32, cu),
             gg = Tensor::empty({m, n}, DType::F32, cu);
      const double lg = ops::lords_assign(W.to(cu), S.to(cu), book.to(cu),
                                          weighted ? h.to(cu) : Tensor(), cg, dg, gg);
      EXPECT_NEAR(lg, lc, 1e-12 * std::fabs(lc)) << bits;
      EXPECT_EQ(std::memcmp(cg.to(Device::CPU).raw(), cc.raw(), size_t(m * n)), 0) << bits;
      EXPECT_EQ(std::memcmp(dg.to(Device::CPU).raw(), dc.raw(), size_t(m * n) * 4), 0) << bits;
      EXPECT_EQ(std::memcmp(gg.to(Device::CPU).raw(), gc.raw(), size_t(m * n) * 4), 0) << bits;
      // scale_by_codebook on the codes just assigned.
      ops::scale_by_codebook(gc, cc, book, 0.5);
      ops::scale_by_codebook(gg, cg, book.to(cu), 0.5);
      EXPECT_EQ(std::memcmp(gg.to(Device::CPU).raw(), gc.raw(), size_t(m * n) * 4), 0) << bits;
    }
  }
  // A code outside the codebook is an error on the GPU as on the CPU.
  Tensor c = Tensor::zeros({4, 8}, DType::U8);
  c.data<uint8_t>()[5] = 9;
  Tensor g = Tensor::zeros({4, 8}, DType::F32, Device::CUDA);
  EXPECT_THROW(ops::scale_by_codebook(g, c.to(Device::CUDA), nf_codebook(3).to(Device::CUDA), 1.0),
               Error);
}

TEST(LordsGpu, AdamStepMatchesCpu) {
  REQUIRE_GPU();
  const int64_t n = 5000;
  Tensor p = randn({n}, 1), m = randn({n}, 2, 0.1), v = randn({n}, 3, 0.1);
  for (int64_t e = 0; e < n; ++e) v.data<float>()[e] = std::fabs(v.data<float>()[e]);
  Tensor pg = p.to(Device::CUDA), mg = m.to(Device::CUDA), vg = v.to(Device::CUDA);
  for (int64_t step = 1; step <= 5; ++step) {
    const Tensor g = randn({n}, uint64_t(10 + step));
    ops::AdamParams a;
    a.lr = 0.03;
    a.step = step;
    ops::adam_step(p, g, m, v, a);
    ops::adam_step(pg, g.to(Device::CUDA), mg, vg, a);
  }
  EXPECT_LT(rel(pg.to(Device::CPU), p), 1e-6);
  EXPECT_LT(rel(vg.to(Device::CPU), v), 1e-6);
}
