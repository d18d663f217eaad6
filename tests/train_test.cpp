// Training (src/train/): each mode's parametrization maps dL/dW to its tensors' gradients as
// an independent host computation in double says; `lrquant train` on lab-s lowers the training
// loss in every mode and writes a folder that `lrquant eval` runs; a run stopped halfway and
// continued by the same command ends with the same bytes as an uninterrupted one; 1 and 2
// threads give the same bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "formats/lords_linear.h"
#include "grad_util.h"
#include "io/mapped_file.h"
#include "model/linear.h"
#include "test_util.h"
#include "train/proj_param.h"

using namespace lrq;
using lrq::test::max_rel;
using lrq::test::within;

namespace {

Tensor host64(const Tensor& t) { return t.to(DType::F64); }

// C = A B in double, for the host references.
Tensor mm(const Tensor& A, bool ta, const Tensor& B, bool tb) {
  const Tensor a = host64(A), b = host64(B);
  const int64_t m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
  const int64_t n = tb ? b.dim(0) : b.dim(1);
  Tensor c = Tensor::zeros({m, n}, DType::F64);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p)
        s += (ta ? a.at<double>(p * a.dim(1) + i) : a.at<double>(i * k + p)) *
             (tb ? b.at<double>(j * b.dim(1) + p) : b.at<double>(p * n + j));
      c.at<double>(i * n + j) = s;
    }
  return c;
}

std::unique_ptr<LordsLinear> random_lords(int64_t out, int64_t in, int64_t r, uint64_t seed) {
  const Tensor codes = test::random_codes(out, in, 4, seed);
  const Tensor B = test::randn({out, r}, seed + 1, 0.3, 0.5);
  const Tensor A = test::randn({r, in}, seed + 2, 0.3, 0.5);
  std::vector<float> book(16);
  for (int i = 0; i < 16; ++i) book[size_t(i)] = float(i - 8) / 7.f;
  return LordsLinear::pack(codes, B, A, Tensor::from(book, {16}), 4);
}

// Runs backward(G) from zero gradients and returns the parameters' gradients.
std::vector<Tensor> grads_of(ProjParam& p, const Tensor& G) {
  for (Param* q : p.params()) q->grad = Tensor::zeros(q->value.shape(), DType::F32);
  p.backward(G);
  std::vector<Tensor> out;
  for (Param* q : p.params()) out.push_back(q->grad);
  return out;
}

}  // namespace

TEST(TrainParams, LoraGradientsAreTheFactorProducts) {
  const int64_t out = 24, in = 40, r = 3;
  const Tensor W0 = test::randn({out, in}, 1);
  auto p = make_lora("l", W0, nullptr, r, 6.0, 7);
  auto params = p->params();
  params[0]->value.copy_from(test::randn({out, r}, 2));  // B, nonzero so dA is too
  const Tensor G = test::randn({out, in}, 3);
  const auto g = grads_of(*p, G);
  const double s = 6.0 / 3.0;
  Tensor dB = mm(G, false, params[1]->value, true), dA = mm(params[0]->value, true, G, false);
  ops::scale(dB, s);
  ops::scale(dA, s);
  within("lora dB", max_rel(g[0], dB), 1e-6);
  within("lora dA", max_rel(g[1], dA), 1e-6);
  // The effective weight is W0 + s B A, and the dense export stores exactly that.
  Tensor W = mm(params[0]->value, false, params[1]->value, false);
  ops::scale(W, s);
  ops::accumulate(W, W0);
  within("lora weight", max_rel(p->weight(), W), 1e-6);
  within("lora export", max_rel(p->export_linear()->dequantize(), W), 1e-6);
}

TEST(TrainParams, LordsPeftGradientIsThroughTheCodebookValues) {
  const auto q = random_lords(32, 64, 4, 11);
  auto p = make_lords_peft("l", *q);
  // At the start the effective weight is the stored layer's.
  within("lords-peft weight = stored layer", max_rel(p->weight(), q->dequantize()), 1e-6);
  const Tensor G = test::randn({32, 64}, 12);
  const auto g = grads_of(*p, G);
  // dS = G (.) Q with Q = W / S elementwise, S = B A from the F16 factors.
  const Tensor S = mm(q->view().B.to(DType::F32), false, q->view().A.to(DType::F32), false);
  const Tensor W = host64(q->dequantize());
  Tensor dS = Tensor::zeros({32, 64}, DType::F64);
  const Tensor G64 = host64(G);
  for (int64_t i = 0; i < dS.numel(); ++i)
    dS.at<double>(i) = G64.at<double>(i) * W.at<double>(i) / S.at<double>(i);
  within("lords-peft dB", max_rel(g[0], mm(dS, false, q->view().A, true)), 1e-5);
  within("lords-peft dA", max_rel(g[1], mm(q->view().B, true, dS, false)), 1e-5);
}

TEST(TrainParams, LordsQatIsStraightThroughInsideTheCodebook) {
  const auto q = random_lords(16, 32, 2, 21);
  // A latent weight that sits partly outside the codebook's range (t beyond +-8/7 or 1).
  Tensor Wl = q->dequantize();
  ops::scale(Wl, 1.3);
  auto p = make_lords_qat("l", *q, Wl);
  const Tensor G = test::randn({16, 32}, 22);
  const auto g = grads_of(*p, G);
  const Tensor S = mm(q->view().B.to(DType::F32), false, q->view().A.to(DType::F32), false);
  const Tensor W = host64(Wl), G64 = host64(G), Wq = host64(p->weight());
  Tensor dW = Tensor::zeros({16, 32}, DType::F64), dS = Tensor::zeros({16, 32}, DType::F64);
  int64_t outside = 0;
  for (int64_t i = 0; i < dS.numel(); ++i) {
    const double s = S.at<double>(i), t = W.at<double>(i) / s, qv = Wq.at<double>(i) / s;
    const bool in = t >= -8.0 / 7.0 && t <= 1.0;
    outside += !in;
    dW.at<double>(i) = in ? G64.at<double>(i) : 0.0;
    dS.at<double>(i) = G64.at<double>(i) * (in ? qv - t : qv);
  }
  EXPECT_GT(outside, 10);  // both branches of the straight-through rule are exercised
  EXPECT_LT(outside, dS.numel() - 10);
  within("lords-qat dW", max_rel(g[0], dW), 1e-6);
  within("lords-qat dB", max_rel(g[1], mm(dS, false, q->view().A, true)), 1e-5);
  within("lords-qat dA", max_rel(g[2], mm(q->view().B, true, dS, false)), 1e-5);
}

// ------------------------------------------------------------------ the command on lab-s
namespace {

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A short run on lab-s's own README (in the repository, so no shared data is needed).
std::string train_args(const std::string& mode, const std::string& out, int steps,
                       const std::string& rank = "4", std::string recipe = "") {
  const std::string text = test::repo("models/lab-s/README.md");
  if (recipe.empty()) recipe = mode.rfind("lords", 0) == 0 ? "lords:b4,steps=20" : "nf:b4,block64";
  return "train --model " + test::repo("models/lab-s") + " --mode " + mode + " --train " + text +
         " --eval " + text + " --eval-ctx 128 --eval-windows 4 --steps " + std::to_string(steps) +
         " --seqlen 64 --batch 2 --lr 3e-3 --rank " + rank + " --warmup 2 --seed 5 --out " + out +
         " --recipe " + recipe;
}

nlohmann::json training_of(const std::string& dir) {
  return nlohmann::json::parse(read_text_file(dir + "/config.json"))["quantization_config"]["training"];
}

// Mean training loss of the first and of the last `k` steps of a curve.
std::pair<double, double> loss_ends(const nlohmann::json& curve, int k) {
  std::vector<double> l;
  for (const auto& e : curve)
    if (e.contains("loss")) l.push_back(e["loss"].get<double>());
  double a = 0, b = 0;
  for (int i = 0; i < k; ++i) {
    a += l[size_t(i)] / k;
    b += l[l.size() - 1 - size_t(i)] / k;
  }
  return {a, b};
}

}  // namespace

TEST(TrainCli, EveryModeLowersTheLossAndWritesAFolderEvalRuns) {
  for (const std::string mode : {"lora", "qlora", "lords-peft", "lords-qat"}) {
    SCOPED_TRACE(mode);
    const std::string out = test::temp_dir() + "/" + mode;
    const auto r = test::run_cli("--threads 2 " + train_args(mode, out, 16) + " --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto t = training_of(out);
    const auto [first, last] = loss_ends(t["curve"], 3);
    std::printf("%s: loss %.4f -> %.4f, %lld trainable\n", mode.c_str(), first, last,
                (long long)t["trainable_parameters"].get<int64_t>());
    EXPECT_LT(last, first - 0.1) << mode;
    EXPECT_FALSE(std::filesystem::exists(out + ".train-state"));
    // The folder runs under eval unchanged, and gives the perplexity the trainer measured last.
    const auto e = test::run_cli("--threads 2 eval --model " + out + " --text " +
                                 test::repo("models/lab-s/README.md") +
                                 " --ctx 128 --max-windows 4 --json --quiet");
    ASSERT_EQ(e.exit_code, 0) << e.err;
    const auto j = nlohmann::json::parse(e.out);
    double last_ppl = 0;
    for (const auto& c : t["curve"])
      if (c.contains("eval_ppl")) last_ppl = c["eval_ppl"].get<double>();
    EXPECT_NEAR(j["ppl"].get<double>(), last_ppl, 1e-9 * last_ppl);
    const auto cfg = nlohmann::json::parse(read_text_file(out + "/config.json"));
    const std::string kind = cfg["quantization_config"]["layers"].empty()
                                 ? "dense"
                                 : cfg["quantization_config"]["layers"]
                                      ["model.layers.0.self_attn.q_proj"]["kind"].get<std::string>();
    EXPECT_EQ(kind, mode == "lora" ? "dense" : mode == "qlora" ? "packed" : "lords");
    if (mode == "qlora") {
      EXPECT_EQ(cfg["quantization_config"]["layers"]["model.layers.0.mlp.up_proj"]["lowrank"][0]["rank"], 4);
    }
  }
}

TEST(TrainCli, ResumedRunEqualsUninterruptedAndThreadsDoNotMatter) {
  const std::string dir = test::temp_dir();
  for (const std::string mode : {"qlora", "lords-qat"}) {
    SCOPED_TRACE(mode);
    const std::string a = dir + "/a-" + mode, b = dir + "/b-" + mode, c = dir + "/c-" + mode;
    auto r = test::run_cli("--threads 1 " + train_args(mode, a, 8) + " --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // Stopped after step 4 (as if killed after its state was written), then the same command.
    r = test::run_cli("--threads 2 " + train_args(mode, b, 8) + " --stop-after 4 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_FALSE(std::filesystem::exists(b));
    ASSERT_TRUE(std::filesystem::exists(b + ".train-state"));
    r = test::run_cli("--threads 2 " + train_args(mode, b, 8));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("resuming from step 4"), std::string::npos) << r.err;
    r = test::run_cli("--threads 2 " + train_args(mode, c, 8) + " --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(slurp(a + "/model.safetensors") == slurp(b + "/model.safetensors"))
        << "resumed run differs";
    EXPECT_TRUE(slurp(a + "/model.safetensors") == slurp(c + "/model.safetensors"))
        << "2 threads differ from 1";
    EXPECT_EQ(slurp(a + "/config.json"), slurp(b + "/config.json"));
  }
}

TEST(TrainCli, BadInputIsOneLineNamingTheProblem) {
  const std::string dir = test::temp_dir();
  auto r = test::run_cli(train_args("lora", dir + "/x", 4, "1000") + " --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--rank"), std::string::npos) << r.err;
  r = test::run_cli(train_args("sgd", dir + "/x", 4) + " --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("unknown mode 'sgd'"), std::string::npos) << r.err;
  r = test::run_cli(train_args("lora", dir + "/x", 4) + " --seqlen 100000 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--seqlen"), std::string::npos) << r.err;
  r = test::run_cli(train_args("qlora", dir + "/x", 4, "4", "gptq:w4g128") + " --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--recipe"), std::string::npos) << r.err;
  // A state file from a different run is refused, not half-applied.
  const std::string y = dir + "/y";
  r = test::run_cli(train_args("lora", y, 6) + " --stop-after 2 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli(train_args("lora", y, 6) + " --weight-decay 0.01 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("y.train-state"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("other options"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// Killed for real (SIGKILL, no chance to clean up) after its state was written at least once:
// the same command continues from the last state on disk and ends with the uninterrupted bytes.
TEST(TrainCli, KilledRunContinuesToTheSameBytes) {
  const std::string dir = test::temp_dir();
  const std::string a = dir + "/a", b = dir + "/b";
  auto r = test::run_cli("--threads 2 " + train_args("lora", a, 10) + " --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string args = "--threads 2 " + train_args("lora", b, 10) + " --save-every 1 --quiet";
  const std::string state = b + ".train-state";
  const std::string kill = "sh -c '" + std::string(LRQ_CLI_BINARY) + " " + args +
                           " & p=$!; while [ ! -f " + state +
                           " ]; do sleep 0.02; done; sleep 0.2; kill -9 $p; wait $p; exit 0'";
  ASSERT_EQ(std::system(kill.c_str()), 0);
  ASSERT_FALSE(std::filesystem::exists(b)) << "the run ended before it was killed";
  r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(slurp(a + "/model.safetensors") == slurp(b + "/model.safetensors"));
  EXPECT_EQ(slurp(a + "/config.json"), slurp(b + "/config.json"));
  EXPECT_FALSE(std::filesystem::exists(state));
}

// --rank 0 gives each adapter the rank of LoRDS scales matched to block 128: qlora then trains
// exactly as many parameters as lords-peft (the rank-matched comparison).
TEST(TrainCli, RankZeroMatchesLordsPeftsTrainableCount) {
  const std::string dir = test::temp_dir();
  std::vector<int64_t> n;
  for (const std::string mode : {"qlora", "lords-peft"}) {
    const std::string out = dir + "/" + mode;
    const auto r = test::run_cli("--threads 2 " + train_args(mode, out, 2, "0") + " --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    n.push_back(training_of(out)["trainable_parameters"].get<int64_t>());
  }
  EXPECT_EQ(n[0], n[1]);
  EXPECT_EQ(n[0], 17920);  // lab-s: rank 1 everywhere, sum of (out + in) over 28 projections
}
