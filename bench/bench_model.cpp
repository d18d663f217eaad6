// Foundation benchmark: sgemm through the seam, a model's prefill and generation speed, and the
// process's peak memory. Prints a markdown table (bench/foundation.sh records it in RESULTS.md).
//   bench_model [MODEL_DIR] [--prefill 512] [--gen 128] [--reps 3]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "backend/ops.h"
#include "eval/generate.h"
#include "formats/load_model.h"

using namespace lrq;
using Clock = std::chrono::steady_clock;

static double secs(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

static double sgemm_gflops(int64_t n, int reps) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> a(n * n), b(n * n);
  for (auto& v : a) v = nd(rng);
  for (auto& v : b) v = nd(rng);
  Tensor A = Tensor::from(a, {n, n}), B = Tensor::from(b, {n, n});
  Tensor C = Tensor::empty({n, n});
  ops::gemm(A, false, B, false, C);  // warm-up
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    ops::gemm(A, false, B, false, C);
    best = std::min(best, secs(t0));
  }
  return 2.0 * double(n) * n * n / best / 1e9;
}

int main(int argc, char** argv) {
  std::string dir = "models/lab-s";
  int64_t prefill = 512, gen = 128;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--prefill" && i + 1 < argc) prefill = std::stoll(argv[++i]);
    else if (a == "--gen" && i + 1 < argc) gen = std::stoll(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::stoi(argv[++i]);
    else dir = a;
  }
  try {
    std::printf("| measurement | value |\n|---|---|\n");
    for (int64_t n : {1024, 2048})
      std::printf("| sgemm %lldx%lld (ops::gemm) | %.1f GFLOP/s |\n", (long long)n,
                  (long long)n, sgemm_gflops(n, reps));
    auto model = load_model(dir);
    std::vector<int32_t> ids(prefill);
    std::mt19937 rng(2);
    for (auto& t : ids) t = int32_t(rng() % model->config().vocab);
    KVCache cache = model->make_cache(prefill + gen);
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
      cache.length = 0;
      auto t0 = Clock::now();
      model->forward(ids, cache, true);
      best = std::min(best, secs(t0));
    }
    std::printf("| %s prefill %lld tokens (all logits) | %.0f tokens/s |\n", dir.c_str(),
                (long long)prefill, double(prefill) / best);
    SampleOptions o;
    o.max_tokens = gen;
    o.stop_at_eos = false;
    std::vector<int32_t> prompt(ids.begin(), ids.begin() + 16);
    best = 1e30;
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      generate(*model, prompt, o);
      best = std::min(best, secs(t0));
    }
    std::printf("| %s greedy generation, 16-token prompt + %lld tokens | %.0f tokens/s |\n",
                dir.c_str(), (long long)gen, double(gen) / best);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    std::printf("| peak resident memory (whole benchmark) | %.1f MiB |\n", ru.ru_maxrss / 1024.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model: %s\n", e.what());
    return 1;
  }
  return 0;
}
