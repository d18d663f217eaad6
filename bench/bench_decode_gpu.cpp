// Decoding on the GPU. Part 1: one projection at batch 1 (and a few small batches) for the
// Llama-7B shapes 4096x4096, 11008x4096 and 4096x11008 (out x in): packed w4/w3/w2 g128 with
// and without a rank-32 F16 low-rank branch, through PackedLinear::forward exactly as the model
// calls it, against cuBLAS with F16 weights (cublasGemmEx, F16 x, F32 compute) and our own F16
// decode kernel. Time per call is the median over graph replays of a sequence that cycles
// through enough weight copies (>= 4x the L2) that every call reads its weights from DRAM;
// achieved GB/s counts every stored tensor + x + y once, against the measured device-to-device
// copy bandwidth. Part 2: a model end to end (lab-m by default): eval tokens/s (512-token
// windows, as `lrquant eval`) and greedy generation tokens/s, FP (bf16) and rtn:w4g128, GPU
// and CPU. Inputs are random, never zeros.
//   bench_decode_gpu [--model DIR] [--text FILE] [--reps N] [--no-model] [--shape OUTxIN]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/memory.h"
#include "backend/ops.h"
#include "eval/generate.h"
#include "eval/perplexity.h"
#include "io/mapped_file.h"
#include "formats/load_model.h"
#include "quant/pipeline.h"
#include "formats/packed_linear.h"
#include "quant/kernels/rtn_grid.h"
#include "tokenizer/tokenizer.h"
#if defined(LRQ_WITH_CUDA)
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/packed_cuda.h"
#include "backend/cuda/packed_mma_cuda.h"
#include "bench_gpu_util.h"
#endif

using namespace lrq;

#if defined(LRQ_WITH_CUDA)
namespace {

using Clock = std::chrono::steady_clock;
using bench::copies_for;
using bench::copy_gbps;
using bench::per_call_ms;
using bench::randn;

// base_ms > 0: also the speed-up over that (cuBLAS) time.
void print_row(const std::string& what, double ms, double bytes, double copy, double base_ms) {
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  char speedup[32] = "-";
  if (base_ms > 0) std::snprintf(speedup, sizeof speedup, "%.2fx", base_ms / ms);
  std::printf("| %-44s | %9.2f | %8.0f | %5.1f%% | %s |\n", what.c_str(), ms * 1e3, gbs,
              100.0 * gbs / copy, speedup);
  std::fflush(stdout);
}

// only: "OUTxIN" to time one shape (for profiling), or empty for all.
void gemv_section(int reps, double copy, const std::string& only) {
  std::printf("\n### Decode GEMV (per call; graph replays, weights cycled through >= 4x L2)\n\n");
  std::printf("| layer (out x in) | us/call | GB/s | of copy | vs cuBLAS f16 |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: |\n");
  // What each tensor-core row launched (tiles, depth, grid, CTAs per SM), printed after the
  // table, to read the variants' differences against.
  std::vector<std::string> launches;
  struct S {
    int64_t out, in;
  };
  for (const S sh : {S{4096, 4096}, S{11008, 4096}, S{4096, 11008}}) {
    const std::string shape = std::to_string(sh.out) + "x" + std::to_string(sh.in);
    if (!only.empty() && only != shape) continue;
    const Tensor Wf = randn({sh.out, sh.in}, 3, 0.02f);
    double base_ms = 0;
    {  // cuBLAS: F16 weights and x, F32 y, F32 compute
      const Tensor W16 = Wf.to(DType::F16);
      const double bytes = double(W16.nbytes()) + 2.0 * sh.in + 4.0 * sh.out;
      const int n = copies_for(bytes);
      std::vector<Tensor> Ws;
      for (int i = 0; i < n; ++i) Ws.push_back(W16.to(Device::CUDA));
      Tensor y = Tensor::empty({1, sh.out}, DType::F32, Device::CUDA);
      base_ms = bench::cublas_f16_gemv_ms(Wf, reps);
      print_row("cuBLAS f16 GemmEx " + shape, base_ms, bytes, copy, 0);
      const Tensor x = randn({1, sh.in}, 5).to(Device::CUDA);
      const double ms = per_call_ms(n, reps, [&](int i) { ops::linear(x, Ws[size_t(i % n)], y); });
      print_row("ops::linear f16 (ours) " + shape, ms,
                double(W16.nbytes()) + 4.0 * (sh.in + sh.out), copy, base_ms);
    }
    for (int bits : {4, 3, 2})
      for (int rank : {0, 32}) {
        RtnOptions o;
        o.bits = bits;
        o.group = 128;
        std::vector<LowRankPart> lr;
        if (rank)
          lr.push_back(LowRankPart::from_f32(randn({sh.out, rank}, 6, 0.05f),
                                             randn({rank, sh.in}, 7, 0.05f), false));
        const PackedLinear q(rtn_quantize(Wf, o), InputTransform{}, lr);
        for (int64_t T : {1, 2, 4, 8}) {
          if (T > 1 && (rank || sh.out != 11008 || bits == 2)) continue;
          const double bytes = double(q.storage_bytes()) + 4.0 * T * (sh.in + sh.out);
          const int n = copies_for(bytes);
          std::vector<std::unique_ptr<Linear>> qs;
          for (int i = 0; i < n; ++i) qs.push_back(q.to(Device::CUDA));
          const Tensor x = randn({T, sh.in}, 8).to(Device::CUDA);
          Tensor y = Tensor::empty({T, sh.out}, DType::F32, Device::CUDA);
          const std::string name =
              q.describe() + " " + shape + (T > 1 ? " T=" + std::to_string(T) : "");
          // Variants: the default first (tensor cores at T <= 2); without PDL (the overlap with
          // the kernel before); 1, 2 or 4 16-row tiles per CTA; 1, 2 or 4 steps in flight; the
          // CUDA-core kernel.
          // "(mma with +lr)": the tensor-core kernel where the default keeps the CUDA-core one.
          using cuda::MmaUse;
          struct V {
            bool pdl;
            cuda::MmaConfig m;
            const char* tag;
          };
          for (const V v : {V{true, {}, ""}, V{false, {}, " (no PDL)"},
                            V{true, {MmaUse::Always}, " (mma with +lr)"},
                            V{true, {MmaUse::Auto, 0, 4}, " (mma depth 4)"},
                            V{true, {MmaUse::Auto, 1}, " (mma 1 tile)"},
                            V{true, {MmaUse::Auto, 2}, " (mma 2 tiles)"},
                            V{true, {MmaUse::Auto, 4}, " (mma 4 tiles)"},
                            V{true, {MmaUse::Auto, 0, 2}, " (mma depth 2)"},
                            V{true, {MmaUse::Auto, 0, 1}, " (mma depth 1)"},
                            V{true, {MmaUse::Off}, " (CUDA cores)"}}) {
            const cuda::MmaConfig& m = v.m;
            if (!v.pdl && !rank && T > 2) continue;  // the CUDA-core kernel overlaps only h = R x
            if (m.use == MmaUse::Always && (!rank || bits == 3)) continue;  // same as the default
            if ((m.tiles || m.depth || m.use == MmaUse::Off) && T > 2) continue;
            cuda::set_packed_pdl(v.pdl);
            cuda::set_packed_gemv_mma(m);
            try {
              const double ms =
                  per_call_ms(n, reps, [&](int i) { qs[size_t(i % n)]->forward(x, y); });
              print_row(name + v.tag, ms, bytes, copy, T == 1 ? base_ms : 0);
              cuda::PackedView pv;  // the shape is all the launch depends on
              pv.rows = sh.out;
              pv.cols = sh.in;
              pv.group = o.group;
              pv.bits = bits;
              pv.format = o.symmetric ? 1 : 0;
              const cuda::MmaLaunch l = cuda::packed_gemv_mma_launch(pv, T, rank ? 1 : 0);
              if (l.grid) {
                char row[256];
                std::snprintf(row, sizeof row, "| %s | %d | %d | %u | %.1f | %d | %.2f |",
                              (name + v.tag).c_str(), l.tiles, l.depth, l.grid,
                              double(l.smem) / 1024, l.ctas_per_sm,
                              double(l.grid) / std::max(1, l.ctas_per_sm * cuda::sm_count()));
                launches.push_back(row);
              }
            } catch (const std::exception& e) {
              std::printf("| %s | failed: %s |\n", (name + v.tag).c_str(), e.what());
            }
          }
          cuda::set_packed_pdl(true);
          cuda::set_packed_gemv_mma({});
        }
      }
  }
  std::printf("\n### Tensor-core launches (CTAs per SM: the occupancy calculator)\n\n");
  std::printf("| row | tiles | depth | grid | smem KB | CTAs/SM | waves |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const std::string& r : launches) std::printf("%s\n", r.c_str());
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct E2E {
  double eval_tps = 0, gen_tps = 0, ppl = 0;
};

// Throughput over `windows` eval windows; ppl over the first two (the same on every device).
E2E run_model(const Model& m, const std::vector<int32_t>& stream, int64_t windows) {
  E2E r;
  EvalOptions eo;
  eo.ctx = 512;
  eo.max_windows = 2;
  eo.progress = false;
  r.ppl = evaluate(m, stream, eo).ppl;  // also the warm-up
  eo.max_windows = windows;
  auto t0 = Clock::now();
  evaluate(m, stream, eo);
  r.eval_tps = double(windows * eo.ctx) / seconds_since(t0);
  SampleOptions so;
  so.max_tokens = 128;
  so.stop_at_eos = false;
  const std::vector<int32_t> prompt(stream.begin(), stream.begin() + 16);
  generate(m, prompt, so);  // warm-up
  t0 = Clock::now();
  generate(m, prompt, so);
  r.gen_tps = double(so.max_tokens) / seconds_since(t0);
  return r;
}

void model_section(const std::string& dir, const std::string& text_path) {
  std::printf("\n### End to end: %s\n\n", dir.c_str());
  auto model = load_model(dir);
  std::vector<int32_t> stream;
  std::string src = "random tokens";
  if (!text_path.empty()) {
    auto tok = load_tokenizer(model->checkpoint().tokenizer_path);
    stream = tok->encode(read_text_file(text_path), model->config().add_bos);
    src = text_path;
  }
  const int64_t windows = 8;
  if (int64_t(stream.size()) < windows * 512) {  // too little text: pad with random tokens
    std::mt19937_64 g(9);
    while (int64_t(stream.size()) < windows * 512)
      stream.push_back(int32_t(g() % uint64_t(model->config().vocab)));
  }
  std::printf("eval: %lld windows of 512 tokens from %s; generation: 16-token prompt + 128 "
              "greedy tokens\n\n",
              (long long)windows, src.c_str());
  std::printf("| model | device | eval tokens/s | generation tokens/s | ppl (2 windows) |\n");
  std::printf("| --- | --- | ---: | ---: | ---: |\n");
  auto report = [&](const std::string& name, const char* dev, const E2E& e) {
    std::printf("| %s | %s | %.0f | %.0f | %.4f |\n", name.c_str(), dev, e.eval_tps, e.gen_tps,
                e.ppl);
    std::fflush(stdout);
  };
  report("fp (bf16 weights)", "cpu", run_model(*model, stream, 2));
  model->to(Device::CUDA);
  report("fp (bf16 weights)", "cuda", run_model(*model, stream, windows));
  auto q = load_model(dir);
  QuantizeOptions qo;
  qo.recipe = parse_recipe("rtn:w4g128");
  qo.progress = false;
  quantize_model(*q, {std::vector<int32_t>(stream.begin(), stream.begin() + 512)}, qo);
  report("rtn:w4g128", "cpu", run_model(*q, stream, 2));
  q->to(Device::CUDA);
  report("rtn:w4g128", "cuda", run_model(*q, stream, windows));
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "models/lab-m", text, only;
  int reps = 20;
  bool with_model = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) model = argv[++i];
    else if (a == "--text" && i + 1 < argc) text = argv[++i];
    else if (a == "--reps" && i + 1 < argc) reps = std::max(3, std::atoi(argv[++i]));
    else if (a == "--no-model") with_model = false;
    else if (a == "--shape" && i + 1 < argc) only = argv[++i];
    else {
      std::fprintf(stderr, "bench_decode_gpu: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  return bench::run_gpu_bench("bench_decode_gpu", [&](const cudaDeviceProp& prop) {
    const double copy = copy_gbps();
    std::printf("GPU: %s, %d SMs, L2 %.0f MB; device-to-device copy %.0f GB/s (read + write)\n",
                prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6, copy);
    gemv_section(reps, copy, only);
    if (with_model) model_section(model, text);
  });
}
#else
int main() {
  std::printf("bench_decode_gpu: this build has no CUDA backend\n");
  return 0;
}
#endif
