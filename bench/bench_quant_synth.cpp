// The quantization pipeline on the GPU at LLaMA-2-7B shapes without a checkpoint: random BF16
// weights (N(0, 0.02), RMSNorm weights 1) generated on the device, never written to disk, and
// random calibration token ids. Runs quantize_model(device = cuda) per recipe and prints a
// markdown table of wall time, the pipeline's stage times and the peak GPU memory.
//   bench_quant_synth [--layers 32] [--windows 128] [--seqlen 2048] [--recipes R1;R2;...]
//                     [--calib-mode sites|block] [--tf32] [--bf16] [--weights host|device]
//                     [--allow-cpu-methods] [--hidden 4096 --intermediate 11008 --heads 32
//                      --vocab 32000] [--budget BPW [--objective O] [--candidates C1;C2;...]]
// --budget adds a row for `quantize --budget` (issue 24): the measurement of every candidate,
// the sensitivities of the objective, the solve and the final run, each timed, so its cost can
// be stated against the uniform rows of the same table.
// --weights host (default) keeps the model in host memory and streams one block at a time to
// the GPU, as `lrquant quantize --device cuda` does with a memory-mapped checkpoint; device
// puts the whole model on the GPU first. Recipes whose method has no GPU path (runs_on) are
// skipped unless --allow-cpu-methods: at these shapes a CPU method takes far longer than the
// rest of the table. Recipes are separated by ';' (a recipe has commas of its own).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/memory.h"
#include "backend/ops.h"
#include "model/llama.h"
#include "quant/allocate.h"
#include "quant/method.h"
#include "quant/pipeline.h"
#include "quant/recipe.h"

using namespace lrq;

namespace {

struct Args {
  int64_t layers = 32, windows = 128, seqlen = 2048;
  int64_t hidden = 4096, intermediate = 11008, heads = 32, vocab = 32000;
  std::string recipes = "rtn:w3g128;gptq:w3g128;flrq:w3g128,residual=gptq;lopro:w3g128";
  std::string calib_mode = "sites", weights = "host";
  bool tf32 = false, bf16 = false, allow_cpu = false;
  uint64_t seed = 1;
  double budget = 0;
  std::string objective = "layer-kl", candidates = kDefaultCandidates;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == sep) {
      if (i > b) out.push_back(s.substr(b, i - b));
      b = i + 1;
    }
  return out;
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A tensor of N(0, std^2) BF16 values generated on the GPU, moved to `where`: on the host the
// GPU holds one tensor at a time while the model is built.
Tensor random_weight(Shape s, uint64_t seed, double std, Device where) {
  Tensor t = Tensor::empty(std::move(s), DType::BF16, Device::CUDA);
  ops::fill_randn(t, seed, std);
  return t.to(where);
}

Tensor ones(int64_t n, Device where) {
  std::vector<float> v(size_t(n), 1.0f);
  return Tensor::from(v, {n}).to(DType::BF16).to(where);
}

// A LLaMA-shaped checkpoint held in memory: Model only reads the tensors map and the config.
std::shared_ptr<Checkpoint> synthetic(const Args& a, Device where) {
  auto c = std::make_shared<Checkpoint>();
  c->path = "synthetic";
  ModelConfig& m = c->config;
  m.hidden = a.hidden;
  m.intermediate = a.intermediate;
  m.n_layers = a.layers;
  m.n_heads = m.n_kv_heads = a.heads;
  m.head_dim = a.hidden / a.heads;
  m.vocab = a.vocab;
  m.max_positions = std::max<int64_t>(4096, a.seqlen);
  m.rms_eps = 1e-5f;
  // The head is never used by quantization; tying it saves vocab x hidden of memory.
  m.tied_embeddings = true;
  m.dtype = DType::BF16;
  uint64_t seed = a.seed * 1000003;
  const double sd = 0.02;
  c->tensors["model.embed_tokens.weight"] = random_weight({a.vocab, a.hidden}, ++seed, sd, where);
  c->tensors["model.norm.weight"] = ones(a.hidden, where);
  const int64_t H = a.hidden, I = a.intermediate;
  for (int64_t l = 0; l < a.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    c->tensors[p + "input_layernorm.weight"] = ones(H, where);
    c->tensors[p + "post_attention_layernorm.weight"] = ones(H, where);
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"})
      c->tensors[p + n + ".weight"] = random_weight({H, H}, ++seed, sd, where);
    c->tensors[p + "mlp.gate_proj.weight"] = random_weight({I, H}, ++seed, sd, where);
    c->tensors[p + "mlp.up_proj.weight"] = random_weight({I, H}, ++seed, sd, where);
    c->tensors[p + "mlp.down_proj.weight"] = random_weight({H, I}, ++seed, sd, where);
  }
  return c;
}

// The budget row: where its time went, against which the uniform rows above are the yardstick.
std::string fmt_budget(const BudgetRun& r, double wall, size_t candidates) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "budget %.3g bpw (%s, %zu candidates): wall %.1f s = measurement %.1f s + "
                "sensitivities %.1f s + final run %.1f s (+ solve); projections %.4f bpw on disk",
                r.bpw, std::string(budget_objective_name(r.objective)).c_str(), candidates, wall,
                r.measured.seconds, r.measured.sensitivity_seconds, r.report.seconds,
                8.0 * double(r.disk_bytes) / double(r.alloc.weights));
  return buf;
}

struct Row {
  std::string recipe, note;
  QuantizeReport rep;
  double wall = 0;
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_quant_synth: %s needs a value\n", s.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (s == "--layers") a.layers = std::atoll(next().c_str());
    else if (s == "--windows") a.windows = std::atoll(next().c_str());
    else if (s == "--seqlen") a.seqlen = std::atoll(next().c_str());
    else if (s == "--hidden") a.hidden = std::atoll(next().c_str());
    else if (s == "--intermediate") a.intermediate = std::atoll(next().c_str());
    else if (s == "--heads") a.heads = std::atoll(next().c_str());
    else if (s == "--vocab") a.vocab = std::atoll(next().c_str());
    else if (s == "--recipes") a.recipes = next();
    else if (s == "--calib-mode") a.calib_mode = next();
    else if (s == "--weights") a.weights = next();
    else if (s == "--seed") a.seed = std::strtoull(next().c_str(), nullptr, 10);
    else if (s == "--tf32") a.tf32 = true;
    else if (s == "--bf16") a.bf16 = true;
    else if (s == "--allow-cpu-methods") a.allow_cpu = true;
    else if (s == "--budget") a.budget = std::atof(next().c_str());
    else if (s == "--objective") a.objective = next();
    else if (s == "--candidates") a.candidates = next();
    else {
      std::fprintf(stderr, "bench_quant_synth: unknown argument %s\n", s.c_str());
      return 2;
    }
  }
  if (a.layers < 1 || a.windows < 1 || a.seqlen < 1 || a.heads < 1 || a.hidden % a.heads ||
      (a.weights != "host" && a.weights != "device")) {
    std::fprintf(stderr, "bench_quant_synth: bad sizes or --weights (host | device)\n");
    return 2;
  }
  if (!backend::cuda_available()) {
    std::fprintf(stderr, "bench_quant_synth: needs a CUDA build and a visible GPU\n");
    return 1;
  }
  try {
    const Device where = a.weights == "host" ? Device::CPU : Device::CUDA;
    auto t0 = std::chrono::steady_clock::now();
    std::shared_ptr<const Checkpoint> ckpt = synthetic(a, where);
    ops::synchronize();
    const double build_s = since(t0);

    std::mt19937 g(uint32_t(a.seed));
    std::uniform_int_distribution<int32_t> tok(0, int32_t(a.vocab - 1));
    std::vector<std::vector<int32_t>> windows(size_t(a.windows), std::vector<int32_t>(size_t(a.seqlen)));
    for (auto& w : windows)
      for (auto& t : w) t = tok(g);

    std::vector<Row> rows;
    for (const auto& rs : split(a.recipes, ';')) {
      Row row;
      row.recipe = rs;
      QuantizeOptions o;
      o.recipe = parse_recipe(rs);
      o.device = Device::CUDA;
      o.calib_mode = parse_calib_mode(a.calib_mode);
      o.tf32 = a.tf32;
      o.bf16 = a.bf16;
      o.progress = false;
      const bool on_gpu = make_method(o.recipe)->runs_on(Device::CUDA);
      if (!on_gpu && !a.allow_cpu) {
        row.note = "skipped: method runs on the CPU only (--allow-cpu-methods)";
        rows.push_back(std::move(row));
        continue;
      }
      row.note = on_gpu ? "" : "method on CPU";
      Model model(ckpt);  // fresh dense layers over the same weights for every recipe
      auto t1 = std::chrono::steady_clock::now();
      row.rep = quantize_model(model, windows, o);
      row.wall = since(t1);
      std::fprintf(stderr, "%s: %.1f s\n", rs.c_str(), row.wall);
      rows.push_back(std::move(row));
    }

    std::string budget_line;
    if (a.budget > 0) {
      QuantizeOptions o;
      o.device = Device::CUDA;
      o.calib_mode = parse_calib_mode(a.calib_mode);
      o.tf32 = a.tf32;
      o.bf16 = a.bf16;
      o.progress = false;
      BudgetOptions b;
      b.bpw = a.budget;
      b.candidates = parse_candidates(a.candidates);
      b.objective = parse_budget_objective(a.objective);
      Model model(ckpt);
      auto t1 = std::chrono::steady_clock::now();
      BudgetRun r = quantize_to_budget(model, windows, o, b);
      const double wall = since(t1);
      std::fprintf(stderr, "budget %.3g: %.1f s\n", a.budget, wall);
      budget_line = fmt_budget(r, wall, b.candidates.size());
    }

    std::printf("\n### Synthetic LLaMA-2-7B-shaped quantization on the GPU\n\n");
    std::printf("%lld blocks, hidden %lld, MLP %lld, %lld heads, vocab %lld; %lld windows x %lld "
                "tokens; calib mode %s; matmul %s; weights on %s (%s); model built in %.1f s\n\n",
                (long long)a.layers, (long long)a.hidden, (long long)a.intermediate,
                (long long)a.heads, (long long)a.vocab, (long long)a.windows,
                (long long)a.seqlen, a.calib_mode.c_str(), a.bf16 ? "BF16" : a.tf32 ? "TF32" : "F32",
                a.weights.c_str(), a.weights == "host" ? "streamed per block" : "resident",
                build_s);
    std::printf("| recipe | wall s | s/block | forward | stats | method | report | transfer | "
                "offload | peak GPU GiB | bpw | mean out err | note |\n");
    std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (const auto& r : rows) {
      if (r.wall == 0) {
        std::printf("| %s | | | | | | | | | | | | %s |\n", r.recipe.c_str(), r.note.c_str());
        continue;
      }
      const StageTimes& s = r.rep.stages;
      auto j = r.rep.to_json()["total"];
      std::printf("| %s | %.1f | %.2f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.3f | %.4f | %s |\n",
                  r.recipe.c_str(), r.wall, r.wall / double(a.layers), s.forward, s.stats,
                  s.method, s.report, s.transfer, s.offload,
                  double(r.rep.peak_gpu_bytes) / 1073741824.0,
                  j["bpw"].get<double>(), j["mean_output_err"].get<double>(), r.note.c_str());
    }
    if (!budget_line.empty()) std::printf("\n%s\n", budget_line.c_str());
    std::fflush(stdout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_quant_synth: %s\n", e.what());
    return 1;
  }
  return 0;
}
