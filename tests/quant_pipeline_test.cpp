// The quantization pipeline end to end on the embedded lab-s: RTN against an independent
// reference implementation, save -> load -> eval equality, bits per weight against the bytes
// on disk, the AWQ/GPTQ orderings, and the errors users see.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <csignal>

#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "calib/windows.h"
#include "eval/perplexity.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "formats/load_model.h"
#include "quant/pipeline.h"
#include "quant/resume.h"
#include "formats/packed_linear.h"
#include "formats/save.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace lrq {
namespace {

struct Fixture {
  std::unique_ptr<Tokenizer> tok;
  std::vector<std::vector<int32_t>> calib;
  std::vector<int32_t> eval_ids;
};

// Calibration and evaluation text from ../shared (lab-corpus), 16 x 256 calibration windows.
const Fixture& fixture() {
  static Fixture f = [] {
    Fixture f;
    f.tok = load_tokenizer(test::repo("models/lab-s/tokenizer.model"));
    auto calib = tokenize_files(*f.tok, {test::shared("data/lab-corpus/calib.txt")}, true);
    f.calib = draw_windows(calib, 16, 256, 0, "calib");
    f.eval_ids = f.tok->encode(read_text_file(test::shared("data/lab-corpus/valid.txt")), true);
    return f;
  }();
  return f;
}

double ppl(const Model& m, int64_t windows = 24) {
  EvalOptions o;
  o.max_windows = windows;
  o.progress = false;
  return evaluate(m, fixture().eval_ids, o).ppl;
}

std::unique_ptr<Model> quantized(const std::string& recipe, QuantizeReport* rep = nullptr) {
  auto m = load_model(test::repo("models/lab-s"));
  QuantizeOptions o;
  o.recipe = parse_recipe(recipe);
  o.progress = false;
  QuantizeReport r = quantize_model(*m, fixture().calib, o);
  if (rep) *rep = r;
  return m;
}

// Straightforward asymmetric RTN (METHODS.md): per group min/max including 0, scale =
// (max - min) / (2^b - 1), zero = round(-min / scale), clamp; scales and offsets rounded to
// fp16 as stored. Written here independently of src/quant.
std::vector<float> reference_rtn(const float* w, int64_t rows, int64_t cols, int bits,
                                 int64_t group) {
  std::vector<float> out(rows * cols);
  const float maxq = float((1 << bits) - 1);
  auto f16 = [](float v) { return Tensor::from({v}, {1}).to(DType::F16).to(DType::F32).at<float>(0); };
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g0 = 0; g0 < cols; g0 += group) {
      float lo = 0, hi = 0;
      for (int64_t k = g0; k < g0 + group; ++k) {
        lo = std::min(lo, w[r * cols + k]);
        hi = std::max(hi, w[r * cols + k]);
      }
      float scale = f16(std::max((hi - lo) / maxq, 6.103515625e-05f));
      float zero = std::nearbyint(-lo / scale);
      float offset = f16(-zero * scale);
      for (int64_t k = g0; k < g0 + group; ++k) {
        float q = std::clamp(std::nearbyint((w[r * cols + k] - offset) / scale), 0.0f, maxq);
        out[r * cols + k] = q * scale + offset;
      }
    }
  return out;
}

class RtnReference : public ::testing::TestWithParam<int> {};

TEST_P(RtnReference, MatchesIndependentImplementation) {
  REQUIRE_SHARED();
  const int bits = GetParam();
  auto q = quantized("rtn:w" + std::to_string(bits) + "g128");
  // Reference: dequantize each original weight with the plain implementation, evaluate in fp32.
  auto ref = load_model(test::repo("models/lab-s"));
  for (const auto& name : ref->linear_names()) {
    Tensor W = ref->linear(name).dequantize();
    auto v = reference_rtn(W.data<float>(), W.dim(0), W.dim(1), bits, 128);
    ref->set_linear(name, std::make_unique<DenseLinear>(Tensor::from(v, W.shape())));
  }
  const double a = ppl(*q), b = ppl(*ref);
  EXPECT_NEAR(a / b, 1.0, 5e-3) << "packed " << a << " reference " << b;
  // Stricter than the acceptance bound: the two must in fact agree to rounding.
  EXPECT_NEAR(a / b, 1.0, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Bits, RtnReference, ::testing::Values(4, 3, 2));

TEST(Pipeline, SaveLoadEvalIsIdenticalAndBitsMatchBytes) {
  REQUIRE_SHARED();
  QuantizeReport rep;
  auto m = quantized("gptq:w3g128,act_order+lr:r8,scale=diag", &rep);
  const double before = ppl(*m);
  const std::string dir = test::temp_dir() + "/q";
  save_quantized(*m, {dir, false, {}});
  auto back = load_model(dir);
  EXPECT_NEAR(ppl(*back) / before, 1.0, 1e-4);
  // Bits per weight = bytes of the layer's tensors in the written file / weights.
  auto st = SafetensorsFile::open(dir + "/model.safetensors");
  for (const auto& l : rep.layers) {
    size_t bytes = 0;
    for (const auto& [name, e] : st.entries())
      if (name.rfind(l.name + ".", 0) == 0) bytes += e.end - e.begin;
    EXPECT_EQ(bytes, l.bytes) << l.name;
    EXPECT_DOUBLE_EQ(l.bpw, 8.0 * double(bytes) / double(l.in * l.out)) << l.name;
  }
  // The config records the recipe per layer.
  auto cfg = nlohmann::json::parse(read_text_file(dir + "/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "lrquant");
  EXPECT_EQ(cfg["quantization_config"]["layers"].size(), rep.layers.size());
}

// Block mode (one statistics pass per block) against the default sites mode: block 0's q/k/v
// see the same inputs in both (bit-identical results), later sites see a block whose earlier
// projections are still full precision, and the quantized model stays close in perplexity.
TEST(Pipeline, BlockCalibModeIsCloseToSitesMode) {
  REQUIRE_SHARED();
  auto run = [](CalibMode mode, QuantizeReport* rep) {
    auto m = load_model(test::repo("models/lab-s"));
    QuantizeOptions o;
    o.recipe = parse_recipe("gptq:w3g128");
    o.progress = false;
    o.calib_mode = mode;
    *rep = quantize_model(*m, fixture().calib, o);
    return m;
  };
  QuantizeReport rs, rb;
  auto sites = run(CalibMode::Sites, &rs);
  auto block = run(CalibMode::Block, &rb);
  ASSERT_EQ(rs.layers.size(), rb.layers.size());
  auto find = [](const QuantizeReport& r, const std::string& n) {
    for (const auto& l : r.layers)
      if (l.name == n) return l;
    ADD_FAILURE() << n << " not in the report";
    return LayerReport{};
  };
  for (const char* p : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}) {
    const std::string n = Model::linear_name(0, p);
    EXPECT_EQ(find(rs, n).output_err, find(rb, n).output_err) << n;
  }
  // o_proj of block 0 sees quantized q/k/v in sites mode only: the statistics must differ.
  const std::string o0 = Model::linear_name(0, "self_attn.o_proj");
  EXPECT_NE(find(rs, o0).output_err, find(rb, o0).output_err);
  auto fp = load_model(test::repo("models/lab-s"));
  const double base = ppl(*fp), ps = ppl(*sites), pb = ppl(*block);
  std::printf("[calib-mode] fp %.4f sites %.4f block %.4f\n", base, ps, pb);
  EXPECT_GT(pb, base);
  // GPTQ w3 costs lab-s a few percent; the two modes differ by much less than that cost.
  EXPECT_NEAR(pb / ps, 1.0, 0.02) << "sites " << ps << " block " << pb;
  EXPECT_LT(pb / base, 1.25);
  EXPECT_EQ(parse_calib_mode("block"), CalibMode::Block);
  EXPECT_THROW(parse_calib_mode("layer"), Error);
}

// The statistics primitives of the seam on the CPU against plain loops.
TEST(Pipeline, StatsPrimitivesMatchLoops) {
  const int64_t T = 37, n = 19;
  Tensor x = Tensor::empty({T, n});
  ops::fill_randn(x, 7, 1.5);
  Tensor acc = Tensor::zeros({n}, DType::F64), sq = Tensor::zeros({T, n}, DType::F64);
  ops::add_abs_col_sums(x, acc);
  ops::accumulate(sq, x, -2.0);
  double mean = 0, var = 0;
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t t = 0; t < T; ++t) {
      s += std::fabs(x.at<float>(t * n + j));
      EXPECT_EQ(sq.at<double>(t * n + j), -2.0 * double(x.at<float>(t * n + j)));
    }
    EXPECT_DOUBLE_EQ(acc.at<double>(j), s);
  }
  for (int64_t i = 0; i < T * n; ++i) mean += x.at<float>(i);
  mean /= double(T * n);
  for (int64_t i = 0; i < T * n; ++i) var += (x.at<float>(i) - mean) * (x.at<float>(i) - mean);
  var /= double(T * n - 1);
  // 703 samples of N(0, 1.5^2): the standard deviation estimate is within 10% (5 sigma).
  EXPECT_NEAR(std::sqrt(var), 1.5, 0.15);
  EXPECT_NEAR(mean, 0.0, 0.3);
  Tensor a = Tensor::from({1, 2, 3}, {3}).to(DType::F64), b = Tensor::from({4, -5, 6}, {3}).to(DType::F64);
  EXPECT_EQ(ops::dot(a, b), 12.0);
}

TEST(Pipeline, GptqBeatsRtnAndAwqBeatsRtn) {
  REQUIRE_SHARED();
  auto fp = load_model(test::repo("models/lab-s"));
  const double base = ppl(*fp);
  const double rtn = ppl(*quantized("rtn:w3g128"));
  const double gptq = ppl(*quantized("gptq:w3g128"));
  const double awq = ppl(*quantized("awq:w3g128"));
  EXPECT_LT(gptq, rtn);
  EXPECT_LT(awq, rtn);
  // GPTQ's increase over FP is well below RTN's (acceptance on lab-m: <= 60%).
  // The acceptance bound (<= 60% on lab-m, 128 x 512 calibration tokens) is measured by
  // bench/quant_table.sh; with 16 x 256 tokens on lab-s GPTQ gets less data to work with.
  EXPECT_LT(gptq - base, 0.8 * (rtn - base)) << base << " " << rtn << " " << gptq;
}

TEST(Pipeline, ExistingOutputAndBadInputsAreRefused) {
  REQUIRE_SHARED();
  auto m = quantized("rtn:w4g128");
  const std::string dir = test::temp_dir() + "/q";
  fs::create_directory(dir);
  EXPECT_THROW(save_quantized(*m, {dir, false, {}}), Error);
  save_quantized(*m, {dir, true, {}});  // --force replaces it
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  // No temporary folder is left beside the output.
  for (const auto& e : fs::directory_iterator(fs::path(dir).parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".partial"), std::string::npos);
  // --out over the model's own folder (or a folder holding it) is refused, even with --force:
  // the source would be deleted (issue 25).
  const std::string src = test::temp_dir() + "/model";
  fs::copy(test::repo("models/lab-s"), src);
  auto m3 = load_model(src);
  try {
    save_quantized(*m3, {src, true, {}});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("would replace the model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(save_quantized(*m3, {fs::path(src).parent_path().string(), true, {}}), Error);
  EXPECT_THROW(save_quantized(*m3, {src + "/", true, {}}), Error);
  EXPECT_THROW(save_quantized(*m3, {src + "/../model", true, {}}), Error);
  EXPECT_TRUE(fs::exists(src + "/model.safetensors"));
  const auto cli = test::run_cli("quantize --model " + src + " --calib " + src +
                                 "/README.md --recipe rtn:w4g128 --force --out " + src);
  EXPECT_NE(cli.exit_code, 0);
  EXPECT_NE(cli.err.find("would replace the model"), std::string::npos) << cli.err;
  const std::string calib = test::temp_dir() + "/calib";
  fs::create_directory(calib);
  fs::copy_file(test::shared("data/lab-corpus/calib.txt"), calib + "/c.txt");
  const auto cli2 = test::run_cli("quantize --model " + src + " --calib " + calib +
                                  "/c.txt --recipe rtn:w4g128 --force --out " + calib);
  EXPECT_NE(cli2.exit_code, 0);
  EXPECT_NE(cli2.err.find("would replace the calibration file"), std::string::npos) << cli2.err;
  EXPECT_TRUE(fs::exists(calib + "/c.txt"));
  // Too little calibration text.
  std::vector<int32_t> few(1000, 5);
  EXPECT_THROW(draw_windows(few, 16, 128, 0, "calib.txt"), Error);
  // A product that wraps in 64 bits (2^33 x 2^31 = 2^64) is still "too few tokens".
  EXPECT_THROW(draw_windows(few, int64_t(1) << 33, int64_t(1) << 31, 0, "calib.txt"), Error);
  EXPECT_EQ(draw_windows(few, 2, 500, 0, "calib.txt").size(), 2u);
  // Group size that does not divide the width: lab-s has width 256 and 640.
  auto m2 = load_model(test::repo("models/lab-s"));
  QuantizeOptions o;
  o.recipe = parse_recipe("rtn:w4g96");
  o.progress = false;
  EXPECT_THROW(quantize_model(*m2, fixture().calib, o), Error);
}

TEST(Pipeline, CorruptQuantizedCheckpointIsACleanError) {
  REQUIRE_SHARED();
  auto m = quantized("rtn:w4g128");
  const std::string dir = test::temp_dir() + "/q";
  save_quantized(*m, {dir, false, {}});
  // Drop one layer's scales from the metadata: the loader must name the layer.
  auto cfg = nlohmann::json::parse(read_text_file(dir + "/config.json"));
  cfg["quantization_config"]["layers"]["model.layers.1.mlp.up_proj"]["bits"] = 5;
  write_file_atomic(dir + "/config.json", cfg.dump());
  try {
    load_model(dir);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.mlp.up_proj"), std::string::npos)
        << e.what();
  }
  // A float where an integer belongs (the fuzzer's 4.3e40 as a rank) is refused by name, not
  // cast (that cast is undefined behaviour).
  for (const char* key : {"bits", "group"}) {
    cfg["quantization_config"]["layers"]["model.layers.1.mlp.up_proj"]["bits"] = 4;
    cfg["quantization_config"]["layers"]["model.layers.1.mlp.up_proj"]["group"] = 128;
    cfg["quantization_config"]["layers"]["model.layers.1.mlp.up_proj"][key] = 4.3e40;
    write_file_atomic(dir + "/config.json", cfg.dump());
    try {
      load_model(dir);
      FAIL() << "no error for a float " << key;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(key) + " must be an integer in"),
                std::string::npos)
          << e.what();
    }
  }
}

// Overwrites element `index` of an F16 tensor in a written model.safetensors with `bits`.
void poke_f16(const std::string& file, const std::string& tensor, int64_t index, uint16_t bits) {
  std::string b = read_text_file(file);
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  const auto h = nlohmann::json::parse(b.substr(8, n));
  const int64_t off = 8 + int64_t(n) + h.at(tensor).at("data_offsets")[0].get<int64_t>();
  std::memcpy(b.data() + off + 2 * index, &bits, 2);
  write_file_atomic(file, b);
}

// Inf, NaN and zero in the tensors a quantized folder adds (low-rank factors, AWQ's input
// scale) are errors naming the layer and the tensor, not silent garbage.
TEST(Pipeline, NonFiniteQuantizedTensorsAreNamed) {
  REQUIRE_SHARED();
  struct Case {
    const char* recipe;
    const char* layer;
    const char* tensor;  // after the layer's name
    uint16_t bits;       // F16: 0x7e00 NaN, 0x7c00 +inf, 0 zero
    const char* what;
  };
  for (const Case c :
       {Case{"gptq:w3g128+lr:r4", "model.layers.1.mlp.up_proj", ".lr0.L", 0x7e00,
             "low-rank part 0 L contains inf or NaN at element 5"},
        Case{"awq:w4g128", "model.layers.0.self_attn.q_proj", ".input_scale", 0x0000,
             "input_scale is zero at element 5"},
        Case{"awq:w4g128", "model.layers.0.self_attn.q_proj", ".input_scale", 0x7c00,
             "input_scale contains inf or NaN at element 5"}}) {
    auto m = quantized(c.recipe);
    const std::string dir = test::temp_dir() + "/q";
    save_quantized(*m, {dir, false, {}});
    poke_f16(dir + "/model.safetensors", std::string(c.layer) + c.tensor, 5, c.bits);
    try {
      load_model(dir);
      ADD_FAILURE() << c.layer << c.tensor << ": no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(c.layer), std::string::npos) << msg;
      EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
    }
  }
}

}  // namespace
}  // namespace lrq

namespace lrq {

// The project's rule for the CPU: the same command and seed write byte-identical folders with
// any thread count, for every method (1, 2 and 16 threads on this 2-core box; the products are
// split by shape, not by thread, and nothing of the run's timing enters the folder).
TEST(Pipeline, EveryMethodWritesTheSameBytesWithAnyThreadCount) {
  REQUIRE_SHARED();
  const std::string base = test::temp_dir();
  const std::string calib = test::repo("models/lab-s/README.md");  // short: fast runs
  auto bytes = [](const std::string& path) { return read_text_file(path); };
  for (const char* recipe :
       {"rtn:w4g128", "gptq:w3g128", "awq:w4g128", "nf:b4", "flrq:w3g128", "lopro:w3g128",
        "gptq:w3g128+lr:r8,scale=full", "lords:b3,steps=40",
        "lords:b3,objective=full,assign=gptq,steps=20", "lrq:w3g64,clip,steps=4", "gptq:q4_k",
        "flrq:q3_k,residual=gptq"}) {
    std::string first;
    for (int threads : {1, 2, 16}) {
      const std::string out = base + "/t" + std::to_string(threads);
      const auto r = test::run_cli("--threads " + std::to_string(threads) +
                                   " quantize --model " + test::repo("models/lab-s") +
                                   " --calib " + calib + " --nsamples 4 --seqlen 64 --recipe '" +
                                   recipe + "' --out " + out + " --force --quiet --seed 3");
      ASSERT_EQ(r.exit_code, 0) << recipe << ": " << r.err;
      const std::string all = bytes(out + "/model.safetensors") + bytes(out + "/config.json");
      if (threads == 1) first = all;
      else EXPECT_TRUE(all == first) << recipe << " differs with " << threads << " threads";
    }
  }
}

}  // namespace lrq

namespace lrq {

// What a run killed while saving leaves beside --out is repaired by the next run: a partial
// folder of a dead process is removed, the previous output moved aside by a --force replace is
// restored, and nothing of a live process is touched.
TEST(Pipeline, StaleOutputOfKilledRunsIsRepaired) {
  const std::string base = test::temp_dir();
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_GT(dead, 0);
  waitpid(dead, nullptr, 0);  // reaped: the pid names no process now
  auto make = [&](const std::string& d, const std::string& marker) {
    fs::create_directories(base + "/" + d);
    write_file_atomic(base + "/" + d + "/config.json", marker);
  };
  const std::string ds = std::to_string(dead), live = std::to_string(getpid());
  make(".q.partial-" + ds, "partial");
  make(".q.old-" + ds, "previous");
  make(".q.partial-" + live, "busy");
  make(".other.partial-" + ds, "not ours");
  const auto lines = recover_stale_output(base + "/q");
  EXPECT_EQ(lines.size(), 2u);
  EXPECT_EQ(read_text_file(base + "/q/config.json"), "previous");
  EXPECT_FALSE(fs::exists(base + "/.q.partial-" + ds));
  EXPECT_FALSE(fs::exists(base + "/.q.old-" + ds));
  EXPECT_TRUE(fs::exists(base + "/.q.partial-" + live));
  EXPECT_TRUE(fs::exists(base + "/.other.partial-" + ds));
  // With the output present, a stale .old is only removed.
  make(".q.old-" + ds, "older");
  recover_stale_output(base + "/q");
  EXPECT_EQ(read_text_file(base + "/q/config.json"), "previous");
  EXPECT_FALSE(fs::exists(base + "/.q.old-" + ds));
}

}  // namespace lrq

namespace lrq {

// Kill test (issue 25): 20 SIGKILLs and 20 SIGINTs at random points of `quantize --force` over
// a finished output. After each, once the next run's repair has looked, --out holds the
// previous complete output byte for byte and nothing else of the runs is left beside it.
TEST(Pipeline, KilledQuantizeLeavesThePreviousOutput) {
  REQUIRE_SHARED();
  const std::string base = test::temp_dir(), out = base + "/q";
  const std::vector<std::string> args = {
      LRQ_CLI_BINARY, "--threads", "2", "quantize", "--model", test::repo("models/lab-s"),
      // A short calibration text: the run is mostly model work, not tokenizing (~2 s a run).
      "--calib", test::repo("models/lab-s/README.md"), "--nsamples", "4", "--seqlen", "64",
      "--recipe", "gptq:w4g128", "--out", out, "--force", "--quiet", "--seed", "1", "--resume"};
  auto spawn = [&]() {
    const pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      const int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execv(argv[0], argv.data());
      _exit(127);
    }
    return pid;
  };
  auto folder = [&]() {
    return read_text_file(out + "/model.safetensors") + read_text_file(out + "/config.json");
  };
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  waitpid(spawn(), &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const double run_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const std::string reference = folder();
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> when(0.0, 1.1 * run_ms);
  for (int k = 0; k < 40; ++k) {
    const int sig = k < 20 ? SIGKILL : SIGINT;
    const pid_t pid = spawn();
    std::this_thread::sleep_for(std::chrono::microseconds(int64_t(1000 * when(rng))));
    kill(pid, sig);
    waitpid(pid, &status, 0);
    recover_stale_output(out);
    ASSERT_TRUE(fs::exists(out)) << "kill " << k;
    EXPECT_TRUE(folder() == reference) << "kill " << k << " (signal " << sig << ")";
    // The finished blocks (.q.resume) are meant to stay; nothing else may.
    for (const auto& e : fs::directory_iterator(base))
      if (e.path().filename() != ".q.resume")
        EXPECT_EQ(e.path().filename().string().rfind(".q.", 0), std::string::npos)
            << "kill " << k << " left " << e.path();
  }
  // Whatever the kills left, --resume finishes with the uninterrupted run's bytes and cleans up.
  waitpid(spawn(), &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(folder() == reference);
  for (const auto& e : fs::directory_iterator(base))
    EXPECT_EQ(e.path().filename().string().rfind(".q.", 0), std::string::npos) << e.path();
}

// Resuming restores every layer kind bit for bit (one recipe per stored kind): a run that stopped after block 1 (its
// checkpoint as it was then) and was resumed writes the bytes of the uninterrupted run, for every
// method and for per-layer overrides (a full-precision projection, a second method). A checkpoint
// of another job is refused, naming what differs.
TEST(Pipeline, ResumedRunWritesTheUninterruptedBytesForEveryMethod) {
  const std::string base = test::temp_dir();
  auto tok = load_tokenizer(test::repo("models/lab-s/tokenizer.model"));
  const auto stream = tokenize_files(*tok, {test::repo("models/lab-s/README.md")}, true);
  const auto windows = draw_windows(stream, 4, 64, 3, "calib");
  auto bytes = [](const std::string& dir) {
    return read_text_file(dir + "/model.safetensors") + read_text_file(dir + "/config.json");
  };
  const std::vector<std::string> overrides = {"mlp\\.down_proj=fp", "v_proj=rtn:w8g64"};
  for (const char* recipe :
       {"gptq:w3g128,act_order", "nf:b4", "flrq:w3g128,rank=8", "lopro:w3g128,rank=8",
        "gptq:w3g128+lr:r8,scale=full", "lords:b3,steps=5", "lrq:w3,steps=3", "mixed"}) {
    SCOPED_TRACE(recipe);
    const bool mixed = std::string(recipe) == "mixed";
    const nlohmann::json job = {{"recipe", recipe}};
    auto run = [&](const std::string& ck_dir, bool resume, const std::string& out) {
      auto m = load_model(test::repo("models/lab-s"));
      BlockCheckpoints ck(ck_dir, job,
                          resume ? BlockCheckpoints::Previous::Resume
                                 : BlockCheckpoints::Previous::Discard);
      QuantizeOptions o;
      o.recipe = parse_recipe(mixed ? "gptq:w4g128" : recipe);
      if (mixed)
        for (const auto& r : overrides) o.overrides.push_back(parse_layer_recipe(r));
      o.progress = false;
      o.seed = 3;
      o.checkpoints = &ck;
      quantize_model(*m, windows, o);
      SaveOptions so;
      so.out_dir = out;
      so.force = true;
      save_quantized(*m, so);
      return ck.finished();
    };
    fs::remove_all(base + "/ck");
    fs::remove_all(base + "/ck2");
    ASSERT_EQ(run(base + "/ck", false, base + "/full"), 4);
    // The checkpoint of a run stopped after block 1.
    fs::copy(base + "/ck", base + "/ck2", fs::copy_options::recursive);
    for (int l : {2, 3})
      for (const char* ext : {".json", ".safetensors"})
        fs::remove(base + "/ck2/block-" + std::to_string(l) + ext);
    auto state = nlohmann::json::parse(read_text_file(base + "/ck2/state.json"));
    ASSERT_EQ(state.at("finished"), 4);
    state["finished"] = 2;
    write_file_atomic(base + "/ck2/state.json", state.dump());
    ASSERT_EQ(run(base + "/ck2", true, base + "/resumed"), 4);
    EXPECT_TRUE(bytes(base + "/resumed") == bytes(base + "/full"));
  }
  try {
    BlockCheckpoints other(base + "/ck", {{"recipe", "rtn:w3"}},
                           BlockCheckpoints::Previous::Resume);
    FAIL() << "another job's checkpoint was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(recipe differs)"), std::string::npos) << e.what();
  }
  // Finished blocks are not thrown away unless asked (--force).
  try {
    BlockCheckpoints refuse(base + "/ck", {{"recipe", "rtn:w3"}},
                            BlockCheckpoints::Previous::Refuse);
    FAIL() << "finished blocks were discarded silently";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "holds 4 finished blocks of an interrupted run; pass --resume to continue it"),
              std::string::npos)
        << e.what();
  }
  // One run per output at a time.
  BlockCheckpoints held(base + "/ck", {{"recipe", "rtn:w3"}}, BlockCheckpoints::Previous::Discard);
  try {
    BlockCheckpoints second(base + "/ck", {{"recipe", "rtn:w3"}},
                            BlockCheckpoints::Previous::Discard);
    FAIL() << "two runs shared one checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another lrquant run is writing this output"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace lrq

namespace lrq {

// A full disk and a read-only file system give one-line errors and leave nothing behind; the
// read-only case is refused before calibration. Needs a small tmpfs (root in a container);
// skipped with a message where mounting is not allowed.
TEST(Pipeline, FullOrReadOnlyFileSystemIsACleanError) {
  const std::string mnt = test::temp_dir() + "/small";
  fs::create_directories(mnt);
  if (std::system(("mount -t tmpfs -o size=1m tmpfs " + mnt + " 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root); skipping";
  struct Unmount {
    std::string dir;
    ~Unmount() { (void)std::system(("umount " + dir + " 2>/dev/null").c_str()); }
  } unmount{mnt};
  const std::string args = "--threads 1 quantize --model " + test::repo("models/lab-s") +
                           " --calib " + test::repo("models/lab-s/README.md") +
                           " --nsamples 2 --seqlen 64 --recipe rtn:w4g128 --quiet --out " + mnt +
                           "/q";
  const auto full = test::run_cli(args);
  EXPECT_EQ(full.exit_code, 1);
  EXPECT_NE(full.err.find("no space left on device"), std::string::npos) << full.err;
  EXPECT_EQ(std::count(full.err.begin(), full.err.end(), '\n'), 1) << full.err;
  // The blocks finished before the disk filled are kept, whole (no temporary or partial file),
  // and the error says how to continue; no output folder was started.
  const std::string ck = mnt + "/.q.resume";
  EXPECT_NE(full.err.find("blocks finished are kept in " + ck + "; fix the cause and rerun the "
                          "same command with --resume"),
            std::string::npos)
      << full.err;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(mnt)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{".q.resume"});
  const auto state = nlohmann::json::parse(read_text_file(ck + "/state.json"));
  const int64_t kept = state.at("finished").get<int64_t>();
  EXPECT_GT(kept, 0);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(ck)) {
    const std::string f = e.path().filename().string();
    ++files;
    EXPECT_TRUE(f == "state.json" || f.starts_with("block-")) << f;
  }
  EXPECT_EQ(files, size_t(1 + 2 * kept));
  // With room made, the same command continues from them and leaves only the output.
  ASSERT_EQ(std::system(("mount -o remount,size=16m " + mnt).c_str()), 0);
  const auto resumed = test::run_cli(args + " --resume");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  left.clear();
  for (const auto& e : fs::directory_iterator(mnt)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"q"});
  fs::remove_all(mnt + "/q");
  ASSERT_EQ(std::system(("mount -o remount,ro " + mnt).c_str()), 0);
  const auto ro = test::run_cli(args);
  EXPECT_EQ(ro.exit_code, 1);
  EXPECT_NE(ro.err.find(mnt + "/q: cannot write in " + mnt + ": Read-only file system"),
            std::string::npos)
      << ro.err;
}

}  // namespace lrq
