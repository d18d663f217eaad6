// The device-independent half of the GPU runtime, checked on the CPU: choosing a device
// (errors when CUDA cannot be used), --device on eval and generate, layers copied with to(),
// the permute-and-scale primitive and PackedWeight::matmul's low-rank terms against
// explicit double-precision formulas.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/memory.h"
#include "backend/ops.h"
#include "formats/load_model.h"
#include "formats/packed_linear.h"
#include "quant/kernels/rtn_grid.h"
#include "test_util.h"

using namespace lrq;

namespace {

using test::randn;

double rel_err(const Tensor& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = double(got.at<float>(int64_t(i))) - want[i];
    num += e * e;
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

std::string lab_s() { return test::repo("models/lab-s"); }

}  // namespace

TEST(Runtime, ParseDevice) {
  EXPECT_EQ(parse_device("cpu"), Device::CPU);
  try {
    parse_device("tpu");
    FAIL() << "no error for an unknown device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("tpu"), std::string::npos) << e.what();
  }
  if (backend::cuda_available()) {
    EXPECT_EQ(parse_device("cuda"), Device::CUDA);
  } else {
    EXPECT_THROW(parse_device("cuda"), Error);
    EXPECT_THROW(load_model(lab_s(), Device::CUDA), Error);
  }
}

TEST(Runtime, CliDeviceOption) {
  const std::string m = "--model " + lab_s();
  const std::string gen = "generate " + m + " --prompt 'Once upon' --max-tokens 12";
  const auto plain = test::run_cli(gen);
  const auto cpu = test::run_cli(gen + " --device cpu");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  EXPECT_EQ(cpu.out, plain.out);
  EXPECT_GT(plain.out.size(), 10u);

  const auto bad = test::run_cli("generate " + m + " --prompt x --max-tokens 2 --device tpu");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--device"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  if (!backend::cuda_available()) {
    const auto r = test::run_cli("eval " + m + " --text " + test::repo("models/lab-s/README.md") +
                                 " --ctx 64 --device cuda");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("cuda"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// lrquant-runtime (no quantizer linked) runs a quantized folder exactly as lrquant does.
TEST(Runtime, RuntimeBinaryEvaluatesAQuantizedFolderLikeTheFullOne) {
  REQUIRE_SHARED();
  const std::string out = test::temp_dir() + "/q";
  const auto q = test::run_cli("quantize --model " + lab_s() + " --calib " +
                               test::shared("data/lab-corpus/calib.txt") +
                               " --nsamples 4 --seqlen 64 --recipe gptq:w3g64,act_order --out " +
                               out + " --quiet");
  ASSERT_EQ(q.exit_code, 0) << q.err;
  const std::string eval = "eval --model " + out + " --text " + test::repo("models/lab-s/README.md") +
                           " --ctx 64 --max-windows 8 --json";
  const auto full = test::run_cli(eval), rt = test::run_cli(eval, LRQ_RUNTIME_BINARY);
  ASSERT_EQ(full.exit_code, 0) << full.err;
  ASSERT_EQ(rt.exit_code, 0) << rt.err;
  const auto jf = nlohmann::json::parse(full.out), jr = nlohmann::json::parse(rt.out);
  EXPECT_EQ(jr.at("nll").get<double>(), jf.at("nll").get<double>());  // bit for bit
  EXPECT_EQ(jr.at("tokens"), jf.at("tokens"));
  EXPECT_EQ(jf.at("windows"), 8);
  // The quantizer's subcommands are not there.
  const auto none = test::run_cli("quantize --model " + lab_s(), LRQ_RUNTIME_BINARY);
  EXPECT_NE(none.exit_code, 0);
}

// A tokenizer of another model is refused (issue 25: llama2.c's 512-token tok512.bin with
// lab-s's 4096-token vocabulary ran at ppl 42597, exit 0).
TEST(Runtime, ForeignTokenizerIsRefused) {
  REQUIRE_SHARED();
  const std::string tok = test::shared("models/stories260K/tok512.bin");
  const auto r = test::run_cli("eval --model " + lab_s() + " --tokenizer " + tok + " --text " +
                               test::repo("models/lab-s/README.md") + " --ctx 64");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(tok + ": tokenizer has 512 tokens but the model's vocabulary is 4096"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// Under an address-space limit (ulimit -v, common on HPC nodes) `--threads 8` used to hang:
// OpenBLAS retries a failed 128 MiB buffer mmap forever. The CLI now lowers the thread count to
// what fits, says so in one line, and computes the same perplexity.
TEST(Runtime, AddressSpaceLimitLowersThreadsInsteadOfHanging) {
  REQUIRE_SHARED();
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer maps terabytes of shadow memory: no ulimit -v can hold it";
#endif
  const std::string args = "eval --model " + lab_s() + " --text " +
                           test::shared("data/lab-corpus/valid.txt") +
                           " --ctx 128 --max-windows 1 --quiet";
  const auto free_run = test::run_cli("--threads 1 " + args);
  ASSERT_EQ(free_run.exit_code, 0) << free_run.err;
  const auto r = test::run_cli(
      "--threads 8 " + args,
      // 600 MB beyond the shared libraries (a CUDA build maps about 1 GB of them at start).
      "lib_kb=$(ldd " + std::string(LRQ_CLI_BINARY) +
          " | awk '/=> \\//{print $3}' | xargs stat -L -c %s | awk '{s+=$1} END {print "
          "int(s/1024)}'); ulimit -v $((lib_kb + 600000)); exec timeout 60 " +
          std::string(LRQ_CLI_BINARY));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, free_run.out);
  EXPECT_NE(r.err.find("lrquant: note: using 1 threads, not 8"), std::string::npos) << r.err;
}

TEST(Runtime, PermuteScaleColsMatchesFormula) {
  const int64_t T = 3, n = 40;
  const Tensor x = randn({T, n}, 1);
  std::vector<int32_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  std::shuffle(p.begin(), p.end(), std::mt19937_64(2));
  Tensor perm = Tensor::empty({n}, DType::I32);
  std::copy(p.begin(), p.end(), perm.data<int32_t>());
  Tensor s = randn({n}, 3);
  for (int64_t i = 0; i < n; ++i) s.at<float>(i) = std::fabs(s.at<float>(i)) + 0.5f;
  const Tensor s16 = s.to(DType::F16), s_back = s16.to(DType::F32);
  Tensor out = Tensor::empty({T, n});
  ops::permute_scale_cols(x, perm, s16, out);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i)
      EXPECT_EQ(out.at<float>(t * n + i), x.at<float>(t * n + p[i]) / s_back.at<float>(p[i]));
  ops::permute_scale_cols(x, perm, Tensor(), out);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out.at<float>(n + i), x.at<float>(n + p[i]));
  perm.at<int32_t>(5) = int32_t(n);
  EXPECT_THROW(ops::permute_scale_cols(x, perm, s16, out), Error);
  EXPECT_THROW(ops::permute_scale_cols(x, Tensor(), s16, Tensor::empty({T, n + 1})), Error);
}

TEST(Runtime, PackedMatmulLowRankTerms) {
  const int64_t rows = 50, cols = 256, r1 = 7, r2 = 12;
  RtnOptions o;
  o.bits = 3;
  o.group = 64;
  const PackedWeight w = rtn_quantize(randn({rows, cols}, 4, 0.1), o);
  const Tensor Wq = w.dequantize();
  for (int64_t T : {1, 5, 20}) {  // the fused-kernel sizes and the slab path
    const Tensor x = randn({T, cols}, 5 + T);
    const Tensor L1 = randn({rows, r1}, 6).to(DType::F16), h1 = randn({T, r1}, 7);
    const Tensor L2 = randn({rows, r2}, 8), h2 = randn({T, r2}, 9);
    const Tensor L1f = L1.to(DType::F32);
    std::vector<double> ref(size_t(T * rows));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < rows; ++i) {
        // y[t, i] = sum_j Wq[i, j] x[t, j] + sum_k L1[i, k] h1[t, k] + sum_k L2[i, k] h2[t, k]
        auto dot = [&](const Tensor& A, const Tensor& B, int64_t n) {
          double s = 0;
          for (int64_t j = 0; j < n; ++j)
            s += double(A.at<float>(i * n + j)) * B.at<float>(t * n + j);
          return s;
        };
        ref[size_t(t * rows + i)] = dot(Wq, x, cols) + dot(L1f, h1, r1) + dot(L2, h2, r2);
      }
    Tensor y = Tensor::empty({T, rows});
    const std::vector<LowRankTerm> terms = {{L1, h1}, {L2, h2}};
    w.matmul(x, y, false, terms);
    EXPECT_LE(rel_err(y, ref), 1e-5) << "T=" << T;
  }
  const std::vector<LowRankTerm> bad = {{randn({rows + 1, r1}, 1), randn({1, r1}, 2)}};
  Tensor y = Tensor::empty({1, rows});
  EXPECT_THROW(w.matmul(randn({1, cols}, 3), y, false, bad), Error);
}

TEST(Runtime, LayerCopyToCpuComputesTheSame) {
  const int64_t in = 256, out = 96;
  RtnOptions o;
  o.bits = 4;
  o.group = 128;
  std::vector<int32_t> perm(in);
  std::iota(perm.rbegin(), perm.rend(), 0);
  InputTransform t;
  t.permute(perm).hadamard(64, 0);
  std::vector<LowRankPart> lr;
  lr.push_back(LowRankPart::from_f32(randn({out, 8}, 1, 0.1), randn({8, in}, 2, 0.1), true));
  const PackedLinear q(rtn_quantize(randn({out, in}, 3, 0.1), o), t, lr);
  const auto c = q.to(Device::CPU);
  EXPECT_EQ(c->device(), Device::CPU);
  EXPECT_EQ(c->describe(), q.describe());
  const Tensor x = randn({2, in}, 4);
  Tensor y1 = Tensor::empty({2, out}), y2 = Tensor::empty({2, out});
  q.forward(x, y1);
  c->forward(x, y2);
  for (int64_t i = 0; i < y1.numel(); ++i) EXPECT_EQ(y1.at<float>(i), y2.at<float>(i));

  auto m = load_model(lab_s());
  m->to(Device::CPU);
  EXPECT_EQ(m->device(), Device::CPU);
}
