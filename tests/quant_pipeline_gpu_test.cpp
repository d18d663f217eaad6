// The quantization pipeline on the GPU against the same pipeline on the CPU, on the embedded
// lab-s: calibration statistics H and mean |x| (F32 window products, F64 sums on both sides),
// and the perplexity of RTN and GPTQ models quantized with --device cuda, streamed (model on
// the host, one block at a time on the GPU) and resident (model moved to the GPU first).
#include <cmath>
#include <cstdio>

#include "backend/memory.h"
#include "backend/ops.h"
#include "calib/stats.h"
#include "calib/windows.h"
#include "compare_util.h"
#include "eval/perplexity.h"
#include "io/mapped_file.h"
#include "formats/load_model.h"
#include "quant/pipeline.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace lrq {
namespace {

struct Fixture {
  std::vector<std::vector<int32_t>> calib;
  std::vector<int32_t> eval_ids;
};

// 16 calibration windows of 256 tokens, evaluation on the first windows of valid.txt.
const Fixture& fixture() {
  static Fixture f = [] {
    Fixture f;
    auto tok = load_tokenizer(test::repo("models/lab-s/tokenizer.model"));
    auto calib = tokenize_files(*tok, {test::shared("data/lab-corpus/calib.txt")}, true);
    f.calib = draw_windows(calib, 16, 256, 0, "calib");
    f.eval_ids = tok->encode(read_text_file(test::shared("data/lab-corpus/valid.txt")), true);
    return f;
  }();
  return f;
}

double ppl(const Model& m) {
  EvalOptions o;
  o.max_windows = 16;
  o.progress = false;
  return evaluate(m, fixture().eval_ids, o).ppl;
}

// Block 1's four sites' activations for the calibration windows (the first block run on the
// CPU), fed to CPU and GPU statistics alike.
TEST(PipelineGpu, SiteStatisticsMatchCpu) {
  REQUIRE_GPU();
  REQUIRE_SHARED();
  auto m = load_model(test::repo("models/lab-s"));
  const ModelConfig& c = m->config();
  KVCache cache = m->make_cache(256);
  const Site sites[] = {Site::AttnIn, Site::OIn, Site::MlpIn, Site::DownIn};
  auto width = [&](Site s) {
    return s == Site::OIn ? c.q_width() : s == Site::DownIn ? c.intermediate : c.hidden;
  };
  for (bool tf32 : {false, true}) {
    std::vector<SiteStats> cpu, gpu;
    for (Site s : sites) {
      cpu.emplace_back(width(s));
      gpu.emplace_back(width(s), Device::CUDA);
    }
    const bool prev = ops::set_allow_tf32(tf32);
    for (const auto& w : fixture().calib) {
      Tensor x = m->embed(w);
      m->block_forward(0, x, 0, cache);
      m->block_forward(1, x, 0, cache, [&](int64_t, Site s, const Tensor& in) {
        cpu[size_t(s)].add(in);
        gpu[size_t(s)].add(in.to(Device::CUDA));
      });
    }
    ops::set_allow_tf32(prev);
    for (Site s : sites) {
      cpu[size_t(s)].finalize();
      gpu[size_t(s)].finalize();
      EXPECT_EQ(gpu[size_t(s)].device(), Device::CUDA);
      EXPECT_EQ(gpu[size_t(s)].tokens(), cpu[size_t(s)].tokens());
      const std::string tag = std::string(site_name(s)) + (tf32 ? " tf32" : " f32");
      // F32 products of 256-row windows on both sides, summed in F64: the GPU's different
      // summation order leaves ~1e-7 relative; TF32's 10-bit mantissa about 1e-3.
      test::within("stats H " + tag, test::rel_err(gpu[size_t(s)].H(), cpu[size_t(s)].H()),
                   tf32 ? 3e-3 : 2e-6);
      test::within("stats mean|x| " + tag,
                   test::rel_err(gpu[size_t(s)].mean_abs(), cpu[size_t(s)].mean_abs()), 1e-12);
      SiteStats back = gpu[size_t(s)].to(Device::CPU);
      EXPECT_EQ(back.device(), Device::CPU);
      EXPECT_EQ(test::rel_err(back.H(), gpu[size_t(s)].H()), 0.0);
    }
  }
}

class PipelineGpuRecipe : public ::testing::TestWithParam<const char*> {};

// Perplexity of the CUDA-quantized models within 0.5% of the CPU-quantized one; the layer
// reports (computed on the device) agree with the CPU's.
TEST_P(PipelineGpuRecipe, PerplexityMatchesCpu) {
  REQUIRE_GPU();
  REQUIRE_SHARED();
  const std::string recipe = GetParam();
  auto run = [&](Device model_dev, Device dev, QuantizeReport* rep) {
    auto m = load_model(test::repo("models/lab-s"), model_dev);
    QuantizeOptions o;
    o.recipe = parse_recipe(recipe);
    o.progress = false;
    o.device = dev;
    *rep = quantize_model(*m, fixture().calib, o);
    return m;
  };
  QuantizeReport rc, rs, rr;
  auto cpu = run(Device::CPU, Device::CPU, &rc);
  auto streamed = run(Device::CPU, Device::CUDA, &rs);
  auto resident = run(Device::CUDA, Device::CUDA, &rr);
  EXPECT_TRUE(rs.streamed);
  EXPECT_FALSE(rr.streamed);
  EXPECT_EQ(streamed->device(), Device::CPU);
  for (int64_t l = 0; l < streamed->n_layers(); ++l)
    EXPECT_EQ(streamed->block_device(l), Device::CPU) << "block " << l << " left on the GPU";
  EXPECT_GT(rs.peak_gpu_bytes, 0u);
  const double pc = ppl(*cpu), ps = ppl(*streamed), pr = ppl(*resident);
  std::printf("[ppl] %s cpu %.4f cuda-streamed %.4f cuda-resident %.4f; peak GPU %.1f MiB "
              "(streamed) %.1f MiB (resident)\n",
              recipe.c_str(), pc, ps, pr, rs.peak_gpu_bytes / 1048576.0,
              rr.peak_gpu_bytes / 1048576.0);
  test::within("ppl " + recipe + " cuda streamed / cpu - 1", std::fabs(ps / pc - 1), 5e-3);
  test::within("ppl " + recipe + " cuda resident / cpu - 1", std::fabs(pr / pc - 1), 5e-3);
  ASSERT_EQ(rs.layers.size(), rc.layers.size());
  ASSERT_EQ(rr.layers.size(), rc.layers.size());
  double worst = 0, streamed_vs_resident = 0;
  for (size_t i = 0; i < rc.layers.size(); ++i) {
    EXPECT_EQ(rs.layers[i].name, rc.layers[i].name);
    EXPECT_EQ(rs.layers[i].bytes, rc.layers[i].bytes);
    worst = std::max(worst, std::fabs(rs.layers[i].output_err / rc.layers[i].output_err - 1));
    streamed_vs_resident = std::max(
        streamed_vs_resident, std::fabs(rs.layers[i].output_err / rr.layers[i].output_err - 1));
  }
  // Streaming uploads the next block while this one computes; the same arithmetic on the same
  // bytes must follow (a block read before its upload landed would be far off).
  test::within("layer output error " + recipe + " streamed/resident - 1 (worst)",
               streamed_vs_resident, 1e-9);
  // RTN ignores H, so its error differs only by the report's arithmetic; GPTQ's rounding
  // choices may flip where H differs in the last bits, which moves the error a little.
  test::within("layer output error " + recipe + " cuda/cpu - 1 (worst)", worst,
               recipe.rfind("rtn", 0) == 0 ? 1e-6 : 5e-2);
}

INSTANTIATE_TEST_SUITE_P(Recipes, PipelineGpuRecipe,
                         ::testing::Values("rtn:w4g128", "gptq:w3g128"),
                         [](const auto& info) {
                           return std::string(info.param).substr(0, 4) == "gptq" ? "gptq" : "rtn";
                         });

// Block mode and TF32 (or BF16) run on the GPU and stay near the CPU's sites-mode model.
class PipelineGpuFast : public ::testing::TestWithParam<bool> {};

TEST_P(PipelineGpuFast, BlockMode) {
  const bool bf16 = GetParam();
  REQUIRE_GPU();
  REQUIRE_SHARED();
  QuantizeOptions o;
  o.recipe = parse_recipe("gptq:w3g128");
  o.progress = false;
  static const double pc = [&] {  // the CPU reference, shared by both parameters
    auto cpu = load_model(test::repo("models/lab-s"));
    quantize_model(*cpu, fixture().calib, o);
    return ppl(*cpu);
  }();
  auto gpu = load_model(test::repo("models/lab-s"));
  o.device = Device::CUDA;
  o.calib_mode = CalibMode::Block;
  o.tf32 = !bf16;
  o.bf16 = bf16;
  QuantizeReport r = quantize_model(*gpu, fixture().calib, o);
  EXPECT_FALSE(ops::set_allow_tf32(false)) << "TF32 left switched on after quantize_model";
  EXPECT_FALSE(ops::set_bf16_matmul(false)) << "BF16 left switched on after quantize_model";
  const double pg = ppl(*gpu);
  const std::string mode = bf16 ? "block+bf16" : "block+tf32";
  std::printf("[ppl] gptq:w3g128 cpu sites %.4f cuda %s %.4f\n", pc, mode.c_str(), pg);
  test::within("ppl gptq " + mode + " cuda / cpu sites - 1", std::fabs(pg / pc - 1), 2e-2);
  EXPECT_GT(r.stages.forward, 0.0);
  EXPECT_GT(r.stages.stats, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Precision, PipelineGpuFast, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "bf16" : "tf32"; });

}  // namespace
}  // namespace lrq
