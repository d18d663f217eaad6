// The project's rule that the CPU gives the same bits whatever the thread count, op by op: every
// op the calibration forward and the quantizers use, run with 1, 2 and 3 threads on shapes that
// split unevenly, must write identical outputs.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <vector>

#include "backend/ops.h"
#include "formats/packed_linear.h"
#include "quant/kernels/rtn_grid.h"
#include "test_util.h"

using namespace lrq;
using lrq::test::randn;

namespace {

// Runs `op` (which writes into fresh outputs and returns them) under 1, 2 and 3 threads and
// expects byte-identical results.
void same_bits(const char* name, const std::function<std::vector<Tensor>()>& op) {
  ops::set_num_threads(1);
  const std::vector<Tensor> ref = op();
  for (int t : {2, 3}) {
    ops::set_num_threads(t);
    const std::vector<Tensor> got = op();
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i)
      EXPECT_EQ(std::memcmp(got[i].raw(), ref[i].raw(), ref[i].nbytes()), 0)
          << name << " output " << i << " differs at " << t << " threads";
  }
  ops::set_num_threads(1);
}

}  // namespace

TEST(Threads, DenseOpsGiveTheSameBits) {
  for (auto [m, k, n] : {std::array<int64_t, 3>{512, 384, 1152}, {37, 384, 1152}, {1, 384, 1152},
                         {256, 1536, 384}, {2048, 64, 64}}) {
    const Tensor A = randn({m, k}, 1), B = randn({n, k}, 2), Bt = randn({k, n}, 3);
    same_bits("gemm NT", [&] {
      Tensor C = Tensor::empty({m, n});
      ops::gemm(A, false, B, true, C);
      return std::vector<Tensor>{C};
    });
    same_bits("gemm NN", [&] {
      Tensor C = Tensor::empty({m, n});
      ops::gemm(A, false, Bt, false, C);
      return std::vector<Tensor>{C};
    });
    same_bits("gemm TN", [&] {
      Tensor C = Tensor::empty({k, k});
      ops::gemm(A, true, A, false, C);
      return std::vector<Tensor>{C};
    });
    for (DType wt : {DType::F32, DType::BF16, DType::F16}) {
      const Tensor W = B.to(wt);
      same_bits("linear", [&] {
        Tensor y = Tensor::empty({m, n});
        ops::linear(A, W, y);
        return std::vector<Tensor>{y};
      });
    }
    same_bits("xtx", [&] {
      Tensor G = Tensor::empty({k, k}), acc = Tensor::zeros({k, k}, DType::F64);
      ops::xtx(A, G, false);
      ops::accumulate_symmetric(acc, G);
      return std::vector<Tensor>{G, acc};
    });
  }
  const Tensor A = randn({300, 500}, 4), x = randn({500}, 5);
  same_bits("gemv", [&] {
    Tensor y = Tensor::empty({300});
    ops::gemv(A, false, x, y);
    return std::vector<Tensor>{y};
  });
  same_bits("dot / norm_stats", [&] {
    Tensor d = Tensor::empty({2}, DType::F64);
    const Tensor A64 = A.to(DType::F64);
    d.data<double>()[0] = ops::dot(A64, A64);
    d.data<double>()[1] = ops::norm_stats(A).sumsq;
    return std::vector<Tensor>{d};
  });
}

TEST(Threads, TransformerOpsGiveTheSameBits) {
  const int64_t T = 77, H = 8, Hkv = 2, d = 32;
  const Tensor x = randn({T, H * d}, 1), w = randn({H * d}, 2);
  same_bits("rmsnorm", [&] {
    Tensor o = Tensor::empty({T, H * d});
    ops::rmsnorm(x, w, 1e-5f, o);
    return std::vector<Tensor>{o};
  });
  const Tensor q = randn({T, H * d}, 3), K = randn({T, Hkv * d}, 4), V = randn({T, Hkv * d}, 5);
  same_bits("attention", [&] {
    Tensor o = Tensor::empty({T, H * d});
    ops::attention(q, K, V, H, Hkv, d, 0, o);
    return std::vector<Tensor>{o};
  });
  // The activation fake quantizers split rows (or elements) across threads above 65536 values.
  const Tensor acts = randn({300, 512}, 6);
  same_bits("fake_quant_rows + fake_quant_tensor", [&] {
    Tensor a = acts.clone(), b = acts.clone();
    ops::fake_quant_rows(a, 8);
    ops::fake_quant_tensor(b, 0.02f, 8);
    return std::vector<Tensor>{a, b};
  });
  same_bits("rope + silu_mul", [&] {
    Tensor a = q.clone(), o = Tensor::empty({T, H * d});
    ops::rope(a, H, d, 3, 10000.f, false);
    ops::silu_mul(a, x, o);
    return std::vector<Tensor>{a, o};
  });
}

TEST(Threads, PackedMatmulGivesTheSameBits) {
  const Tensor W = randn({384, 512}, 1, 0.02);
  RtnOptions o;
  o.bits = 3;
  o.group = 128;
  const PackedLinear q(rtn_quantize(W, o), InputTransform{}, {});
  for (int64_t T : {1, 5, 64}) {
    const Tensor x = randn({T, 512}, uint64_t(T));
    same_bits("packed forward", [&] {
      Tensor y = Tensor::empty({T, 384});
      q.forward(x, y);
      return std::vector<Tensor>{y};
    });
  }
}
