// The differentiable block (model/block_grad.h): time of forward() (keeping the activations),
// of backward(), and of the passes backward() recomputes instead of keeping (both RMSNorm
// outputs and silu(gate) * up), with the activation memory kept per token and what keeping the
// recomputed ones too would add. On a checkpoint's block (default models/lab-s, block 1) or on
// a random LLaMA-2-7B-shaped block (--7b), on the CPU or the GPU (median of synchronized wall
// clock after a warm-up). docs/DECISIONS.md ("The differentiable block") quotes it.
//   bench_block_grad [--model DIR] [--layer L] [--7b] [--tokens T] [--device cpu|cuda] [--f64]
//                    [--reps N] [--threads N]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "backend/memory.h"
#include "backend/ops.h"
#include "bench_util.h"
#include "io/checkpoint.h"
#include "model/block_grad.h"
#include "model/linear.h"
#include "model/llama.h"

using namespace lrq;

namespace {

Tensor random(Shape s, DType t, Device dev, uint64_t seed, double sd, double mean = 0) {
  Tensor x = Tensor::empty(std::move(s), DType::F32, dev);
  ops::fill_randn(x, seed, sd);
  if (mean != 0) {
    Tensor m = Tensor::empty({x.numel()}, DType::F32);
    for (int64_t i = 0; i < m.numel(); ++i) m.at<float>(i) = float(mean);
    ops::add_inplace(x, m.to(dev));
  }
  return x.to(Device::CPU).to(t).to(dev);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = std::string(LRQ_SOURCE_DIR) + "/models/lab-s";
  int64_t layer = 1, T = 512;
  int reps = 7, threads = 0;
  bool seven_b = false;
  Device dev = Device::CPU;
  DType dt = DType::F32;
  for (int i = 1; i < argc; ++i) {
    const bool more = i + 1 < argc;
    if (!std::strcmp(argv[i], "--model") && more) model_dir = argv[++i];
    else if (!std::strcmp(argv[i], "--layer") && more) layer = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--tokens") && more) T = std::max(1LL, std::atoll(argv[++i]));
    else if (!std::strcmp(argv[i], "--reps") && more) reps = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--threads") && more) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--device") && more) dev = !std::strcmp(argv[++i], "cuda") ? Device::CUDA : Device::CPU;
    else if (!std::strcmp(argv[i], "--7b")) seven_b = true;
    else if (!std::strcmp(argv[i], "--f64")) dt = DType::F64;
    else {
      std::fprintf(stderr,
                   "usage: bench_block_grad [--model DIR] [--layer L] [--7b] [--tokens T] "
                   "[--device cpu|cuda] [--f64] [--reps N] [--threads N]\n");
      return 2;
    }
  }
  threads = ops::set_num_threads(threads);
  if (dev == Device::CUDA && !backend::cuda_available()) {
    std::fprintf(stderr, "bench_block_grad: --device cuda needs a CUDA build and a visible GPU\n");
    return 1;
  }
  ModelConfig cfg;
  BlockWeights w;
  Tensor x;
  std::string what;
  if (seven_b) {
    cfg.hidden = 4096;
    cfg.n_heads = cfg.n_kv_heads = 32;
    cfg.head_dim = 128;
    cfg.intermediate = 11008;
    const double sh = 1 / 64.0, si = 1 / std::sqrt(11008.0);
    w.attn_norm = random({4096}, dt, dev, 1, 0.1, 1.0);
    w.mlp_norm = random({4096}, dt, dev, 2, 0.1, 1.0);
    w.q = random({4096, 4096}, dt, dev, 3, sh);
    w.k = random({4096, 4096}, dt, dev, 4, sh);
    w.v = random({4096, 4096}, dt, dev, 5, sh);
    w.o = random({4096, 4096}, dt, dev, 6, sh);
    w.gate = random({11008, 4096}, dt, dev, 7, sh);
    w.up = random({11008, 4096}, dt, dev, 8, sh);
    w.down = random({4096, 11008}, dt, dev, 9, si);
    x = random({T, 4096}, dt, dev, 10, 1.0);
    what = "LLaMA-2-7B-shaped block";
  } else {
    const auto ck = std::make_shared<Checkpoint>(load_checkpoint(model_dir));
    const Model model(ck, [&](const std::string& name) -> std::unique_ptr<Linear> {
      return std::make_unique<DenseLinear>(ck->get(name + ".weight").to(DType::F32));
    });
    cfg = model.config();
    w = BlockWeights::from_block(model.block(layer), dt, dev);
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < T; ++i) ids.push_back(int32_t((i * 977 + 13) % cfg.vocab));
    x = model.embed(ids).to(dt).to(dev);
    what = model_dir + " block " + std::to_string(layer);
  }
  BlockGrad block(cfg, w);
  const Tensor G = random({T, cfg.hidden}, dt, dev, 11, 1.0);
  BlockWeights grads = block.weights().zeros_like();
  const double fwd = bench::wall_median_ms(reps, [&] { block.forward(x); });
  const double bwd = bench::wall_median_ms(reps, [&] { block.backward(G, grads); });
  Tensor h = Tensor::empty({T, cfg.hidden}, dt, dev);
  const Tensor g = random({T, cfg.intermediate}, dt, dev, 12, 1.0),
               u = random({T, cfg.intermediate}, dt, dev, 13, 1.0), a = g.clone();
  const double rec = bench::wall_median_ms(reps, [&] {
    ops::rmsnorm(x, w.attn_norm, cfg.rms_eps, h);
    ops::rmsnorm(x, w.mlp_norm, cfg.rms_eps, h);
    ops::silu_mul(g, u, a);
  });
  const int64_t kept = 2 * cfg.hidden + 2 * cfg.q_width() + 2 * cfg.kv_width() + cfg.n_heads +
                       2 * cfg.intermediate;
  const int64_t recomputed = 2 * cfg.hidden + cfg.intermediate;
  std::printf("%s, T %lld, %s %s, %d threads: forward %.2f ms, backward %.2f ms, of which "
              "recomputing 2 RMSNorm + SwiGLU %.3f ms (%.1f%%)\n",
              what.c_str(), (long long)T, std::string(device_name(dev)).c_str(),
              std::string(dtype_name(dt)).c_str(), threads, fwd, bwd, rec,
              100 * rec / bwd);
  std::printf("kept per token: %lld values (%.1f MB at T %lld); keeping the recomputed ones too: "
              "+%lld (+%.0f%%)\n",
              (long long)kept, double(kept * T) * double(dtype_size(dt)) / 1e6, (long long)T,
              (long long)recomputed, 100.0 * double(recomputed) / double(kept));
  return 0;
}
