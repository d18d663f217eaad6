// Times RTN and GPTQ on the GPU at LLaMA-2-7B projection shapes and prints a markdown table:
// median wall-clock milliseconds (packing on the GPU included; the result stays there) of the
// factorization of H (once per calibration site) and of the quantization given the factor,
// plus an estimate of whole-model GPTQ time (32 layers; per layer 3 sites of 4096 inputs and
// one of 11008, 4 + 2 + 1 matrices of the three shapes).
// Then PackedWeight::pack alone at those shapes: codes and fp16 scales/offsets on the GPU,
// encoded there, against copying them to the host and encoding there (the former path).
// Then FLRQ (residual=gptq) and LoPRo (w3g128) as whole methods on a weight with a decaying
// low-rank part (their rank is data-dependent and printed): the sketch, BLC, the residual's
// permutation/rotation and GPTQ on the GPU, the layer built there. The statistics are CPU
// SiteStats (copied to the GPU once per site, outside the timing).
//   bench_quant_gpu [--reps 3] [--bits 3] [--group 128]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backend/memory.h"
#include "backend/ops.h"
#include "bench_util.h"
#include "calib/stats.h"
#include "quant/kernels/gptq_solver.h"
#include "quant/method.h"
#include "formats/packed_weight.h"
#include "quant/recipe.h"
#include "quant/kernels/rtn_grid.h"
#if defined(LRQ_WITH_CUDA)
#include "backend/cuda/cuda_common.h"
#endif

using namespace lrq;

#if defined(LRQ_WITH_CUDA)
namespace {

Tensor random_gpu(Shape s, uint64_t seed, float sd, DType t = DType::F32) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  Tensor x = Tensor::empty(std::move(s));
  for (int64_t i = 0; i < x.numel(); ++i) x.at<float>(i) = d(g);
  return x.to(t).to(Device::CUDA);
}

// H = X^T X / T in F64 on the GPU from T random tokens with uneven channel scales.
Tensor hessian_gpu(int64_t n, int64_t T, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  Tensor X = Tensor::empty({T, n}, DType::F64);
  std::vector<double> s(static_cast<size_t>(n));
  for (auto& v : s) v = std::exp(0.7 * d(g));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < n; ++j) X.at<double>(t * n + j) = d(g) * s[size_t(j)];
  Tensor Xg = X.to(Device::CUDA);
  Tensor H = Tensor::empty({n, n}, DType::F64, Device::CUDA);
  ops::gemm(Xg, true, Xg, false, H, 1.0 / double(T), 0.0);
  return H;
}

// CPU statistics of T random tokens with uneven channel scales (the methods take SiteStats).
SiteStats stats_cpu(int64_t n, int64_t T, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d;
  Tensor X = Tensor::empty({T, n});
  std::vector<float> s(static_cast<size_t>(n));
  for (auto& v : s) v = std::exp(0.7f * d(g));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < n; ++j) X.at<float>(t * n + j) = d(g) * s[size_t(j)];
  SiteStats st(n);
  st.add(X);
  st.finalize();
  return st;
}

// Noise plus a rank-32 part whose scale halves every 4 ranks, on the GPU.
Tensor lowrank_gpu(int64_t rows, int64_t cols, uint64_t seed) {
  const int64_t k = 32;
  Tensor A = random_gpu({rows, k}, seed, 0.1f).to(Device::CPU);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < k; ++j) A.at<float>(i * k + j) *= std::pow(0.5f, float(j) / 4.f);
  Tensor W = random_gpu({rows, cols}, seed + 1, 0.02f);
  ops::gemm(A.to(Device::CUDA), false, random_gpu({k, cols}, seed + 2, 1.f), false, W, 1.0, 1.0);
  return W;
}

struct MethodRow {
  std::string recipe;
  int64_t rows, cols;
  int rank;
  double ms;
};

struct Row {
  int64_t rows, cols;
  double factor_ms, gptq_ms, gptq_act_ms, rtn_ms;
};

}  // namespace

int main(int argc, char** argv) {
  int reps = 3, bits = 3;
  int64_t group = 128;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--bits")) bits = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--group")) group = std::atoll(argv[i + 1]);
  }
  if (!backend::cuda_available()) {
    std::printf("no CUDA device visible\n");
    return 0;
  }
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
  std::vector<Row> out;
  for (auto [rows, cols] : shapes) {
    const Tensor W = random_gpu({rows, cols}, uint64_t(rows * 7 + cols), 0.02f);
    const Tensor H = hessian_gpu(cols, 4096, uint64_t(cols));
    GptqOptions o;
    o.grid.bits = bits;
    o.grid.group = group;
    GptqOptions oa = o;
    oa.act_order = true;
    Row r{rows, cols, 0, 0, 0, 0};
    r.factor_ms = bench::wall_median_ms(reps, [&] { (void)gptq_factor(H, o); });
    const GptqFactor f = gptq_factor(H, o), fa = gptq_factor(H, oa);
    r.gptq_ms = bench::wall_median_ms(reps, [&] { (void)gptq_quantize(W, H, o, &f); });
    r.gptq_act_ms = bench::wall_median_ms(reps, [&] { (void)gptq_quantize(W, H, oa, &fa); });
    r.rtn_ms = bench::wall_median_ms(reps, [&] { (void)rtn_quantize(W, o.grid); });
    out.push_back(r);
  }
  std::printf("\n### GPU quantization, w%dg%lld, median of %d (ms, wall clock, packed on the GPU)\n\n",
              bits, static_cast<long long>(group), reps);
  std::printf("| rows x cols | factor(H) | gptq | gptq act_order | rtn |\n|---|---:|---:|---:|---:|\n");
  for (const Row& r : out)
    std::printf("| %lld x %lld | %.1f | %.1f | %.1f | %.1f |\n", static_cast<long long>(r.rows),
                static_cast<long long>(r.cols), r.factor_ms, r.gptq_ms, r.gptq_act_ms, r.rtn_ms);

  std::printf("\n### PackedWeight::pack, w%d affine g%lld, median of %d (ms, wall clock)\n\n", bits,
              static_cast<long long>(group), reps);
  std::printf("| rows x cols | on the GPU | via the host |\n|---|---:|---:|\n");
  for (auto [rows, cols] : shapes) {
    std::mt19937_64 g(uint64_t(rows + cols));
    Tensor codes = Tensor::empty({rows, cols}, DType::U8);
    for (int64_t i = 0; i < codes.numel(); ++i) codes.at<uint8_t>(i) = uint8_t(g() >> (64 - bits));
    const Tensor cd = codes.to(Device::CUDA);
    const Tensor sd = random_gpu({rows, cols / group}, 3, 0.01f, DType::F16);
    const Tensor od = random_gpu({rows, cols / group}, 4, 0.01f, DType::F16);
    const double dev_ms = bench::wall_median_ms(reps, [&] {
      (void)PackedWeight::pack(cd, sd, od, Tensor(), bits, group, QuantFormat::Affine);
    });
    const double host_ms = bench::wall_median_ms(reps, [&] {
      (void)PackedWeight::pack(cd.to(Device::CPU), sd.to(Device::CPU), od.to(Device::CPU), Tensor(),
                               bits, group, QuantFormat::Affine);
    });
    std::printf("| %lld x %lld | %.2f | %.2f |\n", static_cast<long long>(rows),
                static_cast<long long>(cols), dev_ms, host_ms);
  }

  std::vector<MethodRow> mrows;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{4096, 4096}, {11008, 4096}}) {
    const Tensor W = lowrank_gpu(rows, cols, uint64_t(rows + cols));
    const SiteStats st = stats_cpu(cols, 2048, uint64_t(cols) + 5);
    for (const std::string& rs : {fmt::format("flrq:w{}g{},residual=gptq", bits, group),
                                 fmt::format("lopro:w{}g{}", bits, group)}) {
      const Recipe r = parse_recipe(rs);
      auto m = make_method(r);
      int rank = 0;
      const double ms = bench::wall_median_ms(reps, [&] {
        Quantized q = m->quantize(W, st, QuantJob{"bench", 1});
        rank = q.extra.value("rank", 0);
      });
      mrows.push_back({rs, rows, cols, rank, ms});
    }
  }
  std::printf("\n### Low-rank methods on the GPU, median of %d (ms, wall clock, layer on the GPU)\n\n",
              reps);
  std::printf("| recipe | rows x cols | rank | ms |\n|---|---|---:|---:|\n");
  for (const MethodRow& r : mrows)
    std::printf("| %s | %lld x %lld | %d | %.1f |\n", r.recipe.c_str(), static_cast<long long>(r.rows),
                static_cast<long long>(r.cols), r.rank, r.ms);
  // LLaMA-2-7B layer: q,k,v,o 4096x4096 (2 sites of 4096 inputs: qkv, o), gate,up 11008x4096
  // (1 site), down 4096x11008 (1 site).
  const double layer = 3 * out[0].factor_ms + out[2].factor_ms + 4 * out[0].gptq_ms +
                       2 * out[1].gptq_ms + out[2].gptq_ms;
  std::printf("\nLLaMA-2-7B GPTQ estimate (32 layers, quantization only): %.1f s\n",
              32 * layer / 1000.0);
  return 0;
}

#else
int main() {
  std::printf("bench_quant_gpu: built without CUDA\n");
  return 0;
}
#endif
