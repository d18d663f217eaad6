// The model on the GPU against the same model on the CPU: packed matmul for every code width
// and format (decode kernel, its fused low-rank epilogue, the slab + cuBLAS path, dequantize),
// a PackedLinear with every input transform and both low-rank part kinds, lab-s logits and
// greedy generation, and the perplexity of an RTN-quantized lab-s. GPU outputs start as NaN,
// so an element a kernel forgets to write fails. Each check prints "[budget] <name> err <e>
// budget <b>" (errors are ||gpu - cpu||_F / ||cpu||_F in double).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/memory.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/packed_cuda.h"
#include "backend/cuda/packed_mma_cuda.h"
#include "backend/ops.h"
#include "eval/generate.h"
#include "eval/perplexity.h"
#include "formats/load_model.h"
#include "quant/pipeline.h"
#include "formats/packed_linear.h"
#include "quant/kernels/rtn_grid.h"
#include "compare_util.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace lrq;

namespace {


using test::randn;

Tensor gpu(const Tensor& t) { return t.to(Device::CUDA); }

Tensor poisoned_gpu(Shape s) {
  Tensor x = Tensor::empty(std::move(s));
  for (int64_t i = 0; i < x.numel(); ++i) x.at<float>(i) = std::numeric_limits<float>::quiet_NaN();
  return gpu(x);
}

// Every test leaves the kernel knobs at their defaults even when a check throws midway, so
// one failure does not change what the tests after it measure.
class RuntimeGpu : public ::testing::Test {
 protected:
  void TearDown() override {
    if (!::lrq::backend::cuda_available()) return;
    cuda::set_packed_gemv_mma({});
    cuda::set_packed_gemv_variant(0, 0);
    cuda::set_packed_pdl(true);
    cuda::set_bf16_matmul(false);
  }
};

using test::rel_err;
using test::within;

const char* fmt_name(QuantFormat f) { return quant_format_name(f).data(); }

// A packed matrix with random codes, fp16 scales in [0.01, 0.1), offsets in [-0.5, 0.5) and a
// random sorted codebook: the kernels must compute the same function on any valid input.
PackedWeight random_packed(int64_t rows, int64_t cols, int bits, int64_t group, QuantFormat f,
                           uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  Tensor codes = Tensor::empty({rows, cols}, DType::U8);
  for (int64_t i = 0; i < codes.numel(); ++i) codes.at<uint8_t>(i) = uint8_t(g() % (1u << bits));
  Tensor sc = Tensor::empty({rows, cols / group}), off;
  for (int64_t i = 0; i < sc.numel(); ++i) sc.at<float>(i) = 0.01f + 0.09f * u(g);
  if (f == QuantFormat::Affine) {
    off = Tensor::empty({rows, cols / group});
    for (int64_t i = 0; i < off.numel(); ++i) off.at<float>(i) = u(g) - 0.5f;
    off = off.to(DType::F16);
  }
  Tensor book;
  if (f == QuantFormat::Codebook) {
    std::vector<float> v(size_t(1) << bits);
    for (auto& e : v) e = 2.f * u(g) - 1.f;
    std::sort(v.begin(), v.end());
    book = Tensor::from(v, {int64_t(v.size())});
  }
  return PackedWeight::pack(codes, sc.to(DType::F16), off, book, bits, group, f);
}

struct Shape2 {
  int64_t rows, cols, group;
};

}  // namespace

TEST_F(RuntimeGpu, PackedMatmulMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 1;
  // 37 rows: not a multiple of the rows per CTA; 256 columns: fewer chunks than the CTA's
  // lanes; 1184 = 37 chunks: a ragged last pass over the columns.
  for (const Shape2 s : {Shape2{37, 256, 64}, Shape2{70, 1184, 32}, Shape2{300, 4096, 128}})
    for (int bits : {2, 3, 4, 8})
      for (QuantFormat f : {QuantFormat::Affine, QuantFormat::Symmetric, QuantFormat::Codebook}) {
        const PackedWeight w = random_packed(s.rows, s.cols, bits, s.group, f, ++seed);
        const PackedWeight wg = w.to(Device::CUDA);
        const std::string tag = std::string(fmt_name(f)) + " w" + std::to_string(bits) + "g" +
                                std::to_string(s.group) + " " + std::to_string(s.rows) + "x" +
                                std::to_string(s.cols);
        // Dequantization evaluates one rounding of an exact product on both sides.
        within("dequantize " + tag, rel_err(wg.dequantize(), w.dequantize()), 0);
        for (int64_t T : {1, 3, 8, 9, 64}) {
          const Tensor x = randn({T, s.cols}, ++seed, 1.0, 0.3);
          Tensor y = Tensor::empty({T, s.rows});
          w.matmul(x, y);
          Tensor yg = poisoned_gpu({T, s.rows});
          wg.matmul(gpu(x), yg);
          within("matmul " + tag + " T=" + std::to_string(T), rel_err(yg, y), 1e-5);
          // accumulate onto a random y
          const Tensor y0 = randn({T, s.rows}, ++seed);
          Tensor ya = y0.clone(), yga = gpu(y0);
          w.matmul(x, ya, true);
          wg.matmul(gpu(x), yga, true);
          within("matmul+= " + tag + " T=" + std::to_string(T), rel_err(yga, ya), 1e-5);
        }
      }
}

TEST_F(RuntimeGpu, EverySingleTokenVariantMatchesCpu) {
  REQUIRE_GPU();
  // The per-width default picks among these variants; each must compute the same function.
  struct V {
    int rows, unroll;
  };
  uint64_t seed = 700;
  for (const V v : {V{0, 0}, V{4, 1}, V{4, 2}, V{8, 1}, V{8, 2}})
    for (int bits : {2, 3, 4, 8})
      for (QuantFormat f : {QuantFormat::Affine, QuantFormat::Symmetric, QuantFormat::Codebook})
        for (const Shape2 s : {Shape2{37, 256, 64}, Shape2{70, 1184, 32}}) {
          const PackedWeight w = random_packed(s.rows, s.cols, bits, s.group, f, ++seed);
          const Tensor x = randn({1, s.cols}, ++seed, 1.0, 0.3);
          Tensor y = Tensor::empty({1, s.rows}), yg = poisoned_gpu({1, s.rows});
          w.matmul(x, y);
          cuda::set_packed_gemv_variant(v.rows, v.unroll);
          w.to(Device::CUDA).matmul(gpu(x), yg);
          cuda::set_packed_gemv_variant(0, 0);
          within("gemv R" + std::to_string(v.rows) + " U" + std::to_string(v.unroll) + " " +
                     fmt_name(f) + " w" + std::to_string(bits) + " " + std::to_string(s.rows) +
                     "x" + std::to_string(s.cols),
                 rel_err(yg, y), 1e-5);
        }
  EXPECT_THROW(cuda::set_packed_gemv_variant(3, 1), Error);
}

TEST_F(RuntimeGpu, TensorCoreGemvMatchesCpu) {
  REQUIRE_GPU();
  // The tensor-core kernel (T <= 2; cols and group multiples of 128) against the CPU, and the
  // CUDA-core kernel on the same inputs. Shapes: one step (fewer than the CTA's warps); 9 steps
  // (a ragged last pass, 300 rows: a partial tile); groups of two steps; one group per row.
  // Each case also picks the kernel's tiles per CTA and steps in flight (more than the warp has,
  // in the first; 0: the defaults). Two tiles, four steps at 2 bits and one token need 47.9 KB
  // of dynamic shared memory beside the 1 KB static array: above the 48 KB a kernel gets
  // without the opt-in (a launch failure before the opt-in covered it). The last ones have the
  // widest x the 7B shapes give (11008: 132 KB of x's parts in shared memory at T = 2).
  struct Case {
    Shape2 s;
    cuda::MmaConfig m;
  };
  using cuda::MmaUse;
  uint64_t seed = 900;
  for (const Case c : {Case{{37, 128, 128}, {MmaUse::Auto, 1, 4}},
                       Case{{300, 1152, 128}, {MmaUse::Auto, 1, 2}},
                       Case{{300, 1152, 128}, {MmaUse::Auto, 2, 4}},
                       Case{{300, 1152, 128}, {MmaUse::Auto, 4, 1}},
                       Case{{300, 1152, 128}, {MmaUse::Auto, 4, 2}},
                       Case{{70, 2048, 256}, {MmaUse::Auto, 2, 1}},
                       Case{{50, 640, 640}, {MmaUse::Auto, 1, 1}},
                       Case{{40, 11008, 128}, {}},
                       Case{{40, 11008, 128}, {MmaUse::Auto, 2, 2}}})
    for (int bits : {2, 3, 4})
      for (QuantFormat f : {QuantFormat::Affine, QuantFormat::Symmetric}) {
        const Shape2 s = c.s;
        const PackedWeight w = random_packed(s.rows, s.cols, bits, s.group, f, ++seed);
        const PackedWeight wg = w.to(Device::CUDA);
        for (int64_t T : {1, 2}) {
          const std::string tag = std::string(fmt_name(f)) + " w" + std::to_string(bits) + "g" +
                                  std::to_string(s.group) + " " + std::to_string(s.rows) + "x" +
                                  std::to_string(s.cols) + " T=" + std::to_string(T) +
                                  " tiles " + std::to_string(c.m.tiles) + " depth " +
                                  std::to_string(c.m.depth);
          // Activations spanning 2^-20 .. 2^20: the BF16 split must carry all 24 bits.
          Tensor x = randn({T, s.cols}, ++seed, 1.0, 0.3);
          for (int64_t i = 0; i < x.numel(); i += 7) x.at<float>(i) *= std::ldexp(1.f, int(i % 41) - 20);
          const Tensor y0 = randn({T, s.rows}, ++seed);
          Tensor y = y0.clone();
          w.matmul(x, y, true);
          for (bool mma : {true, false}) {
            cuda::MmaConfig m = c.m;
            if (!mma) m.use = MmaUse::Off;
            cuda::set_packed_gemv_mma(m);
            const int64_t calls = cuda::packed_gemv_mma_calls();
            Tensor yg = gpu(y0);
            wg.matmul(gpu(x), yg, true);
            Tensor yp = poisoned_gpu({T, s.rows});
            wg.matmul(gpu(x), yp);
            cuda::set_packed_gemv_mma({});
            EXPECT_EQ(cuda::packed_gemv_mma_calls() - calls, mma ? 2 : 0) << tag;
            within(std::string(mma ? "mma " : "cuda cores ") + "matmul+= " + tag, rel_err(yg, y),
                   1e-5);
            Tensor yr = Tensor::empty({T, s.rows});
            w.matmul(x, yr);
            within(std::string(mma ? "mma " : "cuda cores ") + "matmul " + tag, rel_err(yp, yr),
                   1e-5);
          }
        }
      }
  // 20480 columns: x's parts fit in shared memory for one token (120 KB), not for two (240 KB,
  // above the H100's 227 KB): T = 2 must fall back to the CUDA-core kernel, still exact.
  {
    const PackedWeight w = random_packed(24, 20480, 4, 128, QuantFormat::Affine, ++seed);
    const PackedWeight wg = w.to(Device::CUDA);
    for (int64_t T : {1, 2}) {
      const Tensor x = randn({T, 20480}, ++seed, 1.0, 0.3);
      Tensor yr = Tensor::empty({T, 24});
      w.matmul(x, yr);
      const int64_t calls = cuda::packed_gemv_mma_calls();
      Tensor yp = poisoned_gpu({T, 24});
      wg.matmul(gpu(x), yp);
      EXPECT_EQ(cuda::packed_gemv_mma_calls() - calls, T == 1 ? 1 : 0) << "20480 columns T=" << T;
      within("shared-memory limit 24x20480 T=" + std::to_string(T), rel_err(yp, yr), 1e-5);
    }
  }
  EXPECT_THROW(cuda::set_packed_gemv_mma({MmaUse::Auto, 3}), Error);
  EXPECT_THROW(cuda::set_packed_gemv_mma({MmaUse::Auto, 1, 3}), Error);
}

TEST_F(RuntimeGpu, PackedPrefillInBf16MatchesCpuOnRoundedOperands) {
  REQUIRE_GPU();
  // With set_bf16_matmul the prefill path rounds both the dequantized weight and x to BF16
  // and accumulates in F32: the CPU product of the rounded operands is the reference.
  uint64_t seed = 500;
  for (int bits : {3, 4})
    for (QuantFormat f : {QuantFormat::Affine, QuantFormat::Symmetric}) {
      const PackedWeight w = random_packed(300, 1184, bits, 32, f, ++seed);
      const Tensor x = randn({64, 1184}, ++seed, 1.0, 0.3);
      const Tensor Wr = w.dequantize().to(DType::BF16).to(DType::F32);
      const Tensor xr = x.to(DType::BF16).to(DType::F32);
      const Tensor y0 = randn({64, 300}, ++seed);
      Tensor y = y0.clone();
      ops::gemm(xr, false, Wr, true, y, 1.0, 1.0);
      Tensor yg = gpu(y0);
      cuda::set_bf16_matmul(true);
      w.to(Device::CUDA).matmul(gpu(x), yg, true);
      cuda::set_bf16_matmul(false);
      within(std::string("packed prefill BF16 ") + fmt_name(f) + " w" + std::to_string(bits),
             rel_err(yg, y), 1e-5);
    }
}

TEST_F(RuntimeGpu, TensorCoreLaunchPlans) {
  REQUIRE_GPU();
  // The launch each setting makes, counted by hand: 300 rows = 19 16-row tiles; 11008 rows =
  // 688 tiles, four per CTA by default for one token at 2 bits, else two.
  struct Want {
    int64_t rows, T;
    int bits;
    cuda::MmaConfig m;
    int tiles, depth;
    unsigned grid;
  };
  using cuda::MmaUse;
  for (const Want c : {Want{300, 1, 4, {}, 1, 1, 19},                     // < 8192 rows
                       Want{300, 1, 4, {MmaUse::Auto, 2, 4}, 2, 4, 10},  // ceil(19 / 2)
                       Want{11008, 1, 2, {}, 4, 1, 172},
                       Want{11008, 2, 2, {}, 2, 1, 344},
                       Want{11008, 1, 3, {}, 2, 1, 344},
                       Want{11008, 1, 2, {MmaUse::Auto, 1}, 1, 1, 688},
                       Want{300, 1, 4, {MmaUse::Off}, 0, 0, 0}}) {  // CUDA cores
    cuda::PackedView w;
    w.rows = c.rows;
    w.cols = 1152;
    w.group = 128;
    w.bits = c.bits;
    cuda::set_packed_gemv_mma(c.m);
    const cuda::MmaLaunch l = cuda::packed_gemv_mma_launch(w, c.T, 0);
    cuda::set_packed_gemv_mma({});
    const std::string tag = std::to_string(c.rows) + " rows w" + std::to_string(c.bits) +
                            " T=" + std::to_string(c.T) + " tiles " + std::to_string(c.m.tiles);
    EXPECT_EQ(l.tiles, c.tiles) << tag;
    EXPECT_EQ(l.depth, c.depth) << tag;
    EXPECT_EQ(l.grid, c.grid) << tag;
    if (l.grid) {
      EXPECT_GE(l.ctas_per_sm, 1) << tag;
    }
  }
}

TEST_F(RuntimeGpu, PackedMatmulLowRankTermsMatchCpu) {
  REQUIRE_GPU();
  const PackedWeight w = random_packed(333, 1024, 3, 128, QuantFormat::Affine, 7);
  const PackedWeight wg = w.to(Device::CUDA);
  // T = 1, 2: the tensor-core kernel's epilogue (one and two tiles per CTA); 3, 8: the
  // CUDA-core kernel's; 64: cuBLAS.
  for (int64_t T : {1, 2, 3, 8, 64})
    for (const int tiles : {0, 2}) {
      if (tiles && T > 2) continue;
      cuda::set_packed_gemv_mma({cuda::MmaUse::Auto, tiles});
      const Tensor x = randn({T, 1024}, 100 + T);
      // Two terms: F16 L of rank 40 and F32 L of rank 300 (more than one pass of the CTA).
      std::vector<LowRankTerm> cpu = {
          {randn({333, 40}, 200 + T, 0.1).to(DType::F16), randn({T, 40}, 300 + T)},
          {randn({333, 300}, 400 + T, 0.05), randn({T, 300}, 500 + T)}};
      std::vector<LowRankTerm> dev;
      for (const auto& t : cpu) dev.push_back({gpu(t.L), gpu(t.h)});
      Tensor y = Tensor::empty({T, 333});
      w.matmul(x, y, false, cpu);
      Tensor yg = poisoned_gpu({T, 333});
      wg.matmul(gpu(x), yg, false, dev);
      cuda::set_packed_gemv_mma({});
      within("matmul + 2 low-rank terms T=" + std::to_string(T) + " tiles " +
                 std::to_string(tiles),
             rel_err(yg, y), 1e-5);
    }
}

TEST_F(RuntimeGpu, QuantLinearMatchesCpu) {
  REQUIRE_GPU();
  const int64_t in = 512, out = 300;
  const Tensor W = randn({out, in}, 11, 0.05);
  RtnOptions o;
  o.bits = 4;
  o.group = 128;
  Tensor s = randn({in}, 12, 0.2, 1.0);
  for (int64_t i = 0; i < in; ++i) s.at<float>(i) = std::fabs(s.at<float>(i)) + 0.25f;
  std::vector<int32_t> perm(in);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(13));
  InputTransform t;
  t.scale(s.to(DType::F16)).permute(perm).hadamard(128, 1);
  std::vector<LowRankPart> lr;
  lr.push_back(LowRankPart::from_f32(randn({out, 16}, 14, 0.1), randn({16, in}, 15, 0.1), false));
  lr.push_back(LowRankPart::from_f32(randn({out, 8}, 16, 0.1), randn({8, in}, 17, 0.1), true));
  const PackedLinear q(rtn_quantize(W, o), t, lr);
  const auto qg = q.to(Device::CUDA);
  EXPECT_EQ(qg->device(), Device::CUDA);
  EXPECT_EQ(qg->describe(), q.describe());
  EXPECT_EQ(qg->storage_bytes(), q.storage_bytes());
  // On the GPU the factor product is added by cuBLAS, so the rounding order differs from the CPU.
  within("PackedLinear dequantize", rel_err(qg->dequantize(), q.dequantize()), 1e-6);
  for (int64_t T : {1, 3, 64}) {
    const Tensor x = randn({T, in}, 20 + T);
    Tensor xt = Tensor::empty({T, in}), xtg = poisoned_gpu({T, in});
    q.apply_transform(x, xt);
    static_cast<const PackedLinear&>(*qg).apply_transform(gpu(x), xtg);
    within("apply_transform T=" + std::to_string(T), rel_err(xtg, xt), 1e-6);
    Tensor y = Tensor::empty({T, out});
    q.forward(x, y);
    Tensor yg = poisoned_gpu({T, out});
    qg->forward(gpu(x), yg);
    within("PackedLinear forward T=" + std::to_string(T), rel_err(yg, y), 1e-5);
  }
}

namespace {
std::vector<int32_t> some_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& t : ids) t = int32_t(g() % uint64_t(vocab));
  return ids;
}
}  // namespace

TEST_F(RuntimeGpu, LabSLogitsAndGenerationMatchCpu) {
  REQUIRE_GPU();
  const std::string dir = test::repo("models/lab-s");
  auto cpu = load_model(dir);
  auto dev = load_model(dir, Device::CUDA);
  EXPECT_EQ(dev->device(), Device::CUDA);
  const auto ids = some_ids(64, cpu->config().vocab, 5);
  KVCache c1 = cpu->make_cache(80), c2 = dev->make_cache(80);
  EXPECT_EQ(c2.K[0].device(), Device::CUDA);
  Tensor l1 = cpu->forward(ids, c1, true), l2 = dev->forward(ids, c2, true);
  EXPECT_EQ(l2.device(), Device::CUDA);
  within("lab-s prefill logits (64 tokens)", rel_err(l2, l1), 1e-4);
  for (int step = 0; step < 8; ++step) {
    const int32_t t = ids[size_t(step)];
    l1 = cpu->forward(std::span<const int32_t>(&t, 1), c1, false);
    l2 = dev->forward(std::span<const int32_t>(&t, 1), c2, false);
    within("lab-s decode logits step " + std::to_string(step), rel_err(l2, l1), 1e-4);
  }
  SampleOptions so;
  so.max_tokens = 48;
  so.stop_at_eos = false;
  const auto prompt = some_ids(12, cpu->config().vocab, 6);
  const auto g1 = generate(*cpu, prompt, so), g2 = generate(*dev, prompt, so);
  EXPECT_EQ(g1, g2) << "greedy generation differs between CPU and GPU";
}

namespace {
// The first `bytes` of the evaluation text: $LRQ_TEST_TEXT, else the shared lab corpus.
std::string eval_text(size_t bytes) {
  std::string path;
  if (const char* e = std::getenv("LRQ_TEST_TEXT")) path = e;
  else if (!test::shared_dir().empty()) path = test::shared("data/lab-corpus/valid.txt");
  if (path.empty() || !std::filesystem::exists(path)) return "";
  std::ifstream f(path, std::ios::binary);
  std::string s(bytes, '\0');
  f.read(s.data(), std::streamsize(bytes));
  s.resize(size_t(f.gcount()));
  return s;
}
}  // namespace

TEST_F(RuntimeGpu, QuantizedLabSPerplexityMatchesCpu) {
  REQUIRE_GPU();
  const std::string text = eval_text(64 << 10);
  if (text.empty())
    GTEST_SKIP() << "no evaluation text (set LRQ_TEST_TEXT or LRQ_SHARED); skipping";
  auto model = load_model(test::repo("models/lab-s"));
  auto tok = load_tokenizer(model->checkpoint().tokenizer_path);
  const auto ids = tok->encode(text, model->config().add_bos);
  ASSERT_GE(ids.size(), 1024u);
  QuantizeOptions qo;
  qo.recipe = parse_recipe("rtn:w4g128+lr:r16");
  qo.progress = false;
  quantize_model(*model, {std::vector<int32_t>(ids.begin(), ids.begin() + 256)}, qo);
  EXPECT_NE(model->linear("model.layers.0.mlp.down_proj").describe().find("lr r16"),
            std::string::npos);
  EvalOptions eo;
  eo.ctx = 256;
  eo.max_windows = 4;
  eo.progress = false;
  const EvalResult a = evaluate(*model, ids, eo);
  model->to(Device::CUDA);
  const EvalResult b = evaluate(*model, ids, eo);
  std::printf("quantized lab-s: ppl cpu %.6f cuda %.6f (%lld tokens)\n", a.ppl, b.ppl,
              (long long)a.tokens);
  EXPECT_EQ(a.tokens, b.tokens);
  within("rtn:w4g128+lr:r16 lab-s perplexity", std::fabs(b.ppl - a.ppl) / a.ppl, 1e-4);
}
