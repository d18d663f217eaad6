// Where one calibration forward of a LLaMA-2-7B-shaped block goes on the GPU: every primitive
// the block and the statistics run for one 2048-token window, timed alone (median of CUDA-
// synchronized wall clock), in each matmul precision, with its share of the whole-model
// pipeline (x 128 windows x 32 blocks, x 2 for the ops both forwards run). The device image has
// no timeline profiler, so this is how the forward of bench_quant_synth is split.
//   bench_block_gpu [--reps 9] [--tokens 2048]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/memory.h"
#include "backend/ops.h"
#include "bench_util.h"

using namespace lrq;

namespace {

Tensor randn(Shape s, DType t, uint64_t seed, double std = 1.0) {
  Tensor x = Tensor::empty(std::move(s), t, Device::CUDA);
  ops::fill_randn(x, seed, std);
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 9;
  int64_t T = 2048;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) T = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: bench_block_gpu [--reps N] [--tokens T]\n");
      return 2;
    }
  }
  if (!backend::cuda_available()) {
    std::fprintf(stderr, "bench_block_gpu: needs a CUDA build and a visible GPU\n");
    return 1;
  }
  const int64_t d = 4096, f = 11008, nh = 32, hd = 128, windows = 128, blocks = 32;
  const Tensor x = randn({T, d}, DType::F32, 1), h = randn({T, d}, DType::F32, 2);
  const Tensor a = randn({T, f}, DType::F32, 3), g = randn({T, f}, DType::F32, 4);
  const Tensor Wd4 = randn({d, d}, DType::BF16, 5, 0.02), Wf = randn({f, d}, DType::BF16, 6, 0.02),
               Wdn = randn({d, f}, DType::BF16, 7, 0.02);
  const Tensor q = randn({T, d}, DType::F32, 8), K = randn({T, d}, DType::F32, 9),
               V = randn({T, d}, DType::F32, 10);
  const Tensor Kg = randn({T, 8 * hd}, DType::F32, 12), Vg = randn({T, 8 * hd}, DType::F32, 13);
  const Tensor nw = randn({d}, DType::F32, 11);
  Tensor yd = Tensor::empty({T, d}, DType::F32, Device::CUDA),
         yf = Tensor::empty({T, f}, DType::F32, Device::CUDA);
  Tensor Gd = Tensor::zeros({d, d}, DType::F32, Device::CUDA), Gf = Tensor::zeros({f, f}, DType::F32, Device::CUDA);
  Tensor Hf = Tensor::zeros({f, f}, DType::F64, Device::CUDA), mf = Tensor::zeros({f}, DType::F64, Device::CUDA);
  Tensor xc = Tensor::empty({T, d}, DType::F32, Device::CUDA);

  struct Op {
    std::string name;
    double per_model;  // calls in the whole 7B block-mode pipeline per window and block
    std::function<void()> run;
  };
  // Per window and block: the statistics pass runs the block up to down's input, the second
  // pass the whole block; so everything but down, the residual adds and the clone twice.
  const std::vector<Op> opsv = {
      {"rmsnorm 2048x4096", 4, [&] { ops::rmsnorm(x, nw, 1e-5f, yd); }},
      {"linear 4096->4096 (q,k,v,o)", 8, [&] { ops::linear(h, Wd4, yd); }},
      {"linear 4096->11008 (gate,up)", 4, [&] { ops::linear(h, Wf, yf); }},
      {"linear 11008->4096 (down)", 1, [&] { ops::linear(a, Wdn, yd); }},
      {"rope q or k", 4, [&] { ops::rope(xc, nh, hd, 0, 10000.f, false); }},
      // Calibration runs without a KV cache (attention reads the call's k, v): not in the run.
      {"kv append (2 copies; eval/generation only)", 0, [&] { yd.copy_from(K); yd.copy_from(V); }},
      {"attention prefill 32 heads d128 (BF16: fused)", 2, [&] { ops::attention(q, K, V, nh, nh, hd, 0, yd); }},
      // Not in the 7B run: a GQA model's prefill (Llama-3-8B heads, 32/8) and head_dim 64.
      {"attention prefill 32/8 heads d128 (GQA)", 0, [&] { ops::attention(q, Kg, Vg, nh, 8, hd, 0, yd); }},
      {"attention prefill 64 heads d64", 0, [&] { ops::attention(q, K, V, 64, 64, 64, 0, yd); }},
      {"silu_mul 2048x11008", 2, [&] { ops::silu_mul(g, a, yf); }},
      {"add_inplace 2048x4096", 3, [&] { ops::add_inplace(xc, x); }},
      {"clone x", 1, [&] { xc.copy_from(x); }},
      {"stats xtx 4096 (3 sites)", 3, [&] { ops::xtx(h, Gd, true); }},
      {"stats xtx 11008 (down site)", 1, [&] { ops::xtx(a, Gf, true); }},
      {"stats |x| sums 11008", 1, [&] { ops::add_abs_col_sums(a, mf); }},
      {"stats F64 flush 11008^2 (per 8 windows)", 1.0 / 8, [&] { ops::accumulate(Hf, Gf); }},
  };
  struct Mode {
    const char* name;
    bool tf32, bf16;
  };
  const Mode modes[] = {{"F32", false, false}, {"TF32", true, false}, {"BF16", true, true}};
  std::printf("\n### One 7B-shaped block, one %lld-token window, H100 primitives (ms, median of %d)\n\n",
              (long long)T, reps);
  std::printf("| op | calls/window/block | F32 | TF32 | BF16 | BF16 share of a 7B run (s) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  double total[3] = {0, 0, 0};
  for (const Op& op : opsv) {
    double ms[3];
    for (int m = 0; m < 3; ++m) {
      ops::set_allow_tf32(modes[m].tf32);
      ops::set_bf16_matmul(modes[m].bf16);
      ms[m] = bench::wall_median_ms(reps, op.run);
      total[m] += ms[m] * op.per_model;
    }
    std::printf("| %s | %.3g | %.3f | %.3f | %.3f | %.2f |\n", op.name.c_str(), op.per_model, ms[0],
                ms[1], ms[2], ms[2] * op.per_model * double(windows * blocks) / 1000.0);
  }
  ops::set_allow_tf32(false);
  ops::set_bf16_matmul(false);
  std::printf("| **sum per window and block** | | %.2f | %.2f | %.2f | %.1f |\n", total[0], total[1],
              total[2], total[2] * double(windows * blocks) / 1000.0);
  return 0;
}
