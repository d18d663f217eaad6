// Activation quantization on the GPU against the CPU: the two fake quantizers bit for bit (the
// kernels round every operation as the CPU code does), and lab-s with a8 + kv8 and with
// a8=tensor run on the GPU against the same settings on the CPU (the GEMMs differ in rounding,
// so a value near a grid boundary may land on the neighbouring code: the budget allows that).
// Skips without a visible CUDA device.
#include <cmath>
#include <cstring>
#include <limits>

#include "backend/memory.h"
#include "backend/ops.h"
#include "calib/windows.h"
#include "eval/perplexity.h"
#include "formats/load_model.h"
#include "formats/save.h"
#include "quant/pipeline.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace lrq;

namespace {

Tensor shifted_rows(int64_t rows, int64_t n, uint64_t seed) {
  Tensor x = test::randn({rows, n}, seed, 1.5);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) x.at<float>(r * n + j) += float(r % 5) - 2.0f;
  // One constant row (left unchanged by both) and one with a planted outlier.
  for (int64_t j = 0; j < n; ++j) x.at<float>(n + j) = 0.25f;
  x.at<float>(2 * n + 3) = 300.0f;
  return x;
}

int64_t differing(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::CPU), y = b.to(Device::CPU);
  int64_t d = 0;
  for (int64_t i = 0; i < x.numel(); ++i)
    d += std::memcmp(x.data<float>() + i, y.data<float>() + i, sizeof(float)) != 0;
  return d;
}

TEST(ActQuantGpu, FakeQuantizersMatchTheCpuBitForBit) {
  REQUIRE_GPU();
  for (auto [rows, n] : {std::pair<int64_t, int64_t>{300, 4096}, {77, 64}, {5, 1000}, {1, 33}}) {
    const Tensor x = shifted_rows(rows, n, uint64_t(rows * n));
    for (int bits : {8, 4}) {
      Tensor c = x.clone(), g = x.to(Device::CUDA);
      ops::fake_quant_rows(c, bits);
      ops::fake_quant_rows(g, bits);
      EXPECT_EQ(differing(c, g), 0) << "rows " << rows << "x" << n << " bits " << bits;
      EXPECT_GT(differing(c, x), 0) << "nothing was quantized";
      Tensor ct = x.clone(), gt = x.to(Device::CUDA);
      ops::fake_quant_tensor(ct, 0.037f, bits);
      ops::fake_quant_tensor(gt, 0.037f, bits);
      EXPECT_EQ(differing(ct, gt), 0) << "tensor " << rows << "x" << n << " bits " << bits;
    }
  }
}

TEST(ActQuantGpu, LabSWithActivationQuantizationMatchesTheCpu) {
  REQUIRE_GPU();
  auto tok = load_tokenizer(test::repo("models/lab-s/tokenizer.model"));
  auto stream = tokenize_files(*tok, {test::repo("models/lab-s/README.md")}, true);
  const auto windows = draw_windows(stream, 4, 64, 0, "calib");
  const std::vector<int32_t> ids(stream.begin(), stream.begin() + std::min<size_t>(stream.size(), 512));
  for (const char* recipe : {"rtn:w4g128,a8,kv8", "rtn:w8,a8=tensor,smooth=0.5"}) {
    auto cpu = load_model(test::repo("models/lab-s"));
    QuantizeOptions o;
    o.recipe = parse_recipe(recipe);
    o.progress = false;
    quantize_model(*cpu, windows, o);
    const std::string dir = test::temp_dir() + "/q";
    save_quantized(*cpu, {dir, true, {}});
    auto on_gpu = load_model(dir, Device::CUDA);
    ASSERT_TRUE(on_gpu->activation_quant().active());
    EvalOptions eo;
    eo.ctx = 128;
    eo.progress = false;
    const double a = evaluate(*cpu, ids, eo).ppl, b = evaluate(*on_gpu, ids, eo).ppl;
    std::printf("[budget] %s ppl cpu %.6f gpu %.6f\n", recipe, a, b);
    EXPECT_NEAR(b / a, 1.0, 2e-3) << recipe;
  }
}

}  // namespace
