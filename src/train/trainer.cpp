#include "train/trainer.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <numbers>
#include <numeric>

#include <fmt/format.h>

#include "backend/ops.h"
#include "calib/stats.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "core/sha256.h"
#include "eval/perplexity.h"
#include "formats/lords_linear.h"
#include "formats/packed_linear.h"
#include "io/safetensors.h"
#include "model/model_grad.h"
#include "quant/method.h"
#include "quant/recipe.h"
#include "train/proj_param.h"

namespace lrq {

TrainMode parse_train_mode(const std::string& s, const std::string& arg) {
  if (s == "lora") return TrainMode::Lora;
  if (s == "qlora") return TrainMode::Qlora;
  if (s == "lords-peft") return TrainMode::LordsPeft;
  if (s == "lords-qat") return TrainMode::LordsQat;
  fail(arg, "unknown mode '{}' (lora, qlora, lords-peft, lords-qat)", s);
}

std::string train_mode_name(TrainMode m) {
  switch (m) {
    case TrainMode::Lora: return "lora";
    case TrainMode::Qlora: return "qlora";
    case TrainMode::LordsPeft: return "lords-peft";
    case TrainMode::LordsQat: return "lords-qat";
  }
  return "?";
}

namespace {

// The window order's generator: splitmix64, the same numbers on every platform.
uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Windows of seqlen + 1 tokens starting every seqlen tokens (each token is a target once), in
// a shuffled order per epoch. Window number c of the run is a function of (seed, c) alone.
class WindowOrder {
 public:
  WindowOrder(int64_t count, uint64_t seed) : count_(count), seed_(seed) {}
  int64_t window(int64_t c) {
    const int64_t epoch = c / count_;
    if (epoch != epoch_) {
      perm_.resize(size_t(count_));
      std::iota(perm_.begin(), perm_.end(), int64_t(0));
      uint64_t s = seed_ ^ (0xD1B54A32D192ED03ull * uint64_t(epoch + 1));
      for (int64_t i = count_ - 1; i > 0; --i)  // Fisher-Yates
        std::swap(perm_[size_t(i)], perm_[size_t(splitmix(s) % uint64_t(i + 1))]);
      epoch_ = epoch;
    }
    return perm_[size_t(c % count_)];
  }

 private:
  int64_t count_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> perm_;
};

// The blocks as the trainer holds them: frozen norms and a ProjParam per projection.
class TrainBlocks final : public BlockParams {
 public:
  std::vector<Tensor> attn_norm, mlp_norm;
  std::vector<std::array<std::unique_ptr<ProjParam>, 7>> proj;
  std::array<Shape, 7> shapes;  // [out, in] of each projection, as in every block

  BlockWeights weights(int64_t l) override {
    BlockWeights w;
    w.attn_norm = attn_norm[size_t(l)];
    w.mlp_norm = mlp_norm[size_t(l)];
    auto named = w.named();
    for (size_t i = 0; i < 7; ++i) *named[i + 2].second = proj[size_t(l)][i]->weight();
    return w;
  }
  BlockWeights grads(int64_t l) override {
    // Zeroed per window and folded into the parameters' gradients at once: only one block's
    // dense weight gradients exist at a time.
    BlockWeights g;
    auto named = g.named();
    const Device dev = attn_norm[size_t(l)].device();
    for (size_t i = 0; i < 7; ++i) *named[i + 2].second = Tensor::zeros(shapes[i], DType::F32, dev);
    return g;
  }
  void grads_done(int64_t l, BlockWeights& g) override {
    auto named = g.named();
    for (size_t i = 0; i < 7; ++i) proj[size_t(l)][i]->backward(*named[i + 2].second);
  }
};

Recipe base_recipe(TrainMode mode, const std::string& given) {
  const bool lords = mode == TrainMode::LordsPeft || mode == TrainMode::LordsQat;
  const std::string text = !given.empty() ? given : lords ? "lords:b4" : "nf:b4,block64";
  Recipe r = parse_recipe(text, "--recipe");
  const Stage& b = r.base();
  // Only data-free methods: the trainer has no calibration statistics to give them.
  if (r.stages.size() != 1 ||
      (lords && (b.method != "lords" || b.s("objective") != "weight" || b.s("assign") != "nearest")) ||
      (!lords && b.method != "nf"))
    fail("--recipe", "'{}' does not fit --mode {}: {} (no modifier stages)", text,
         train_mode_name(mode),
         lords ? "a data-free lords recipe (objective=weight, assign=nearest)"
               : "a NormalFloat base (nf:...)");
  return r;
}

// Builds the trainable parametrization of every projection of `model`.
void build_params(Model& model, const TrainOptions& o, TrainBlocks& blocks) {
  const ModelConfig& cfg = model.config();
  std::unique_ptr<Method> method;
  if (o.mode != TrainMode::Lora) method = make_method(base_recipe(o.mode, o.recipe));
  std::map<int64_t, std::unique_ptr<SiteStats>> no_stats;  // data-free methods never read them
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const Block& b = model.block(l);
    blocks.attn_norm.push_back(b.attn_norm.to(DType::F32));
    blocks.mlp_norm.push_back(b.mlp_norm.to(DType::F32));
    blocks.proj.emplace_back();
    for (size_t i = 0; i < 7; ++i) {
      const std::string& s = projection_names()[i];
      const std::string name = Model::linear_name(l, s);
      const Linear& lin = b.proj(s);
      blocks.shapes[i] = {lin.out_features(), lin.in_features()};
      const bool dense = dynamic_cast<const DenseLinear*>(&lin) != nullptr;
      auto quantized = [&]() -> std::unique_ptr<Linear> {
        auto& st = no_stats[lin.in_features()];
        if (!st) st = std::make_unique<SiteStats>(lin.in_features());
        QuantJob job{name, layer_seed(o.seed, name)};
        return method->quantize(lin.dequantize(), *st, job).layer;
      };
      auto refuse = [&](const char* need) {
        fail("--model", "{} is {}; --mode {} needs {}", name, lin.describe(),
             train_mode_name(o.mode), need);
      };
      std::unique_ptr<ProjParam> p;
      const uint64_t seed = layer_seed(o.seed, name);
      // --rank 0: per projection, the rank of LoRDS scales matched to block-128 scales, so the
      // adapters train exactly as many parameters as lords-peft on lords:b4 (r (out + in) each).
      const int64_t rank =
          o.rank > 0 ? o.rank : lords_matched_rank(lin.out_features(), lin.in_features(), 128);
      switch (o.mode) {
        case TrainMode::Lora:
          if (!dense) refuse("a dense (unquantized) model");
          p = make_lora(name, lin.dequantize(), nullptr, rank, o.alpha > 0 ? o.alpha : double(rank),
                        seed);
          break;
        case TrainMode::Qlora: {
          std::unique_ptr<Linear> q;
          if (dense) q = quantized();
          else if (dynamic_cast<const PackedLinear*>(&lin)) q = lin.to(Device::CPU);
          else refuse("a dense model or a NormalFloat-quantized folder");
          auto* lr = dynamic_cast<LowRankLinear*>(q.get());
          if (!lr) refuse("a base with a low-rank branch (packed)");
          Tensor W0 = q->dequantize();
          q.release();
          p = make_lora(name, std::move(W0), std::unique_ptr<LowRankLinear>(lr), rank,
                        o.alpha > 0 ? o.alpha : double(rank), seed);
          break;
        }
        case TrainMode::LordsPeft:
        case TrainMode::LordsQat: {
          std::unique_ptr<Linear> q;
          if (dense) q = quantized();
          else if (dynamic_cast<const LordsLinear*>(&lin)) q = lin.to(Device::CPU);
          else refuse("a dense model or a LoRDS-quantized folder");
          const auto& lq = dynamic_cast<const LordsLinear&>(*q);
          if (o.mode == TrainMode::LordsPeft) p = make_lords_peft(name, lq);
          else p = make_lords_qat(name, lq, lin.dequantize(), o.scale_lr);
          break;
        }
      }
      blocks.proj.back()[i] = std::move(p);
    }
  }
}

std::vector<Param*> all_params(TrainBlocks& blocks) {
  std::vector<Param*> out;
  for (auto& layer : blocks.proj)
    for (auto& p : layer)
      for (Param* q : p->params()) out.push_back(q);
  return out;
}

// Puts the trained layers into the model (for evaluation and for saving).
void export_into(Model& model, TrainBlocks& blocks) {
  for (size_t l = 0; l < blocks.proj.size(); ++l)
    for (size_t i = 0; i < 7; ++i)
      model.set_linear(Model::linear_name(int64_t(l), projection_names()[i]),
                       blocks.proj[l][i]->export_linear());
}

double learning_rate(const TrainOptions& o, int64_t step) {
  if (o.warmup > 0 && step <= o.warmup) return o.lr * double(step) / double(o.warmup);
  const int64_t span = o.steps - o.warmup;
  if (span <= 0) return o.lr;
  const double t = double(step - o.warmup) / double(span);
  const double c = 0.5 * (1.0 + std::cos(std::numbers::pi * t));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * c);
}

std::string duration(double s) {
  const int64_t t = int64_t(s + 0.5);
  return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60)
         : t >= 60 ? fmt::format("{}m{:02}s", t / 60, t % 60)
                   : fmt::format("{}s", t);
}

constexpr const char* kStateMagic = "lrquant-train-state-1";

void save_state(const std::string& path, const std::vector<Param*>& params, int64_t step,
                const std::string& fingerprint, const nlohmann::json& curve) {
  std::vector<std::pair<std::string, Tensor>> t;
  for (Param* p : params) {
    t.emplace_back(p->name, p->value);
    t.emplace_back(p->name + ".adam_m", p->m);
    t.emplace_back(p->name + ".adam_v", p->v);
  }
  write_safetensors(path, t,
                    {{"format", kStateMagic},
                     {"step", std::to_string(step)},
                     {"fingerprint", fingerprint},
                     {"curve", curve.dump()}});
}

// Loads the state into `params`; returns the step it holds. Every mismatch is an Error naming
// the file: a state from another run is never half-applied (everything is checked first).
int64_t load_state(const std::string& path, const std::vector<Param*>& params,
                   const std::string& fingerprint, int64_t steps, nlohmann::json& curve) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  auto meta = [&](const std::string& k) -> const std::string& {
    auto it = f.metadata().find(k);
    if (it == f.metadata().end()) fail(path, "not a training state (no '{}' field)", k);
    return it->second;
  };
  if (meta("format") != kStateMagic) fail(path, "not a training state of this version");
  if (meta("fingerprint") != fingerprint)
    fail(path, "written by a run with other options, model or data (delete it to start over, "
               "or repeat that run's command)");
  const std::string& s = meta("step");
  if (s.empty() || s.size() > 12 || s.find_first_not_of("0123456789") != std::string::npos)
    fail(path, "step '{}' is not a step number", s);
  const int64_t step = std::stoll(s);
  if (step < 1 || step >= steps) fail(path, "step {} is outside 1..{}", step, steps - 1);
  try {
    curve = nlohmann::json::parse(meta("curve"));
  } catch (const std::exception&) {
    fail(path, "the stored learning curve is not JSON");
  }
  if (!curve.is_array()) fail(path, "the stored learning curve is not a list");
  std::vector<std::pair<Tensor*, std::string>> want;
  for (Param* p : params) {
    want.emplace_back(&p->value, p->name);
    want.emplace_back(&p->m, p->name + ".adam_m");
    want.emplace_back(&p->v, p->name + ".adam_v");
  }
  if (f.entries().size() != want.size())
    fail(path, "holds {} tensors, this run has {}", f.entries().size(), want.size());
  std::vector<Tensor> got;
  for (auto& [t, name] : want) {
    if (!f.has(name)) fail(path, "missing tensor {}", name);
    Tensor g = f.get(name);
    if (g.dtype() != DType::F32 || g.shape() != t->shape())
      fail(path, "tensor {} is {}, expected F32[{}]", name, g.str(), shape_str(t->shape()));
    got.push_back(g);
  }
  for (size_t i = 0; i < want.size(); ++i) want[i].first->copy_from(got[i]);
  return step;
}

}  // namespace

TrainResult train(Model& model, std::span<const int32_t> train_ids,
                  std::span<const int32_t> eval_ids, const TrainOptions& o,
                  const nlohmann::json& fingerprint_in) {
  const ModelConfig& cfg = model.config();
  if (o.steps < 1) fail("--steps", "must be at least 1");
  if (o.seqlen < 1 || o.seqlen > cfg.max_positions)
    fail("--seqlen", "{} is outside [1, {}] (the model's context)", o.seqlen, cfg.max_positions);
  if (o.batch < 1) fail("--batch", "must be at least 1");
  if (o.rank < 0) fail("--rank", "must be >= 0 (0: the LoRDS rank matched to block 128)");
  if (o.accum < 1) fail("--accum", "must be at least 1");
  if (!(o.lr > 0) || !std::isfinite(o.lr)) fail("--lr", "must be a positive number");
  if (o.warmup < 0 || o.warmup > o.steps) fail("--warmup", "must be in [0, --steps]");
  if (!(o.weight_decay >= 0) || o.weight_decay * o.lr * std::max(1.0, o.scale_lr) >= 1)
    fail("--weight-decay", "must be >= 0 with weight decay x lr below 1");
  if (!(o.clip >= 0)) fail("--clip", "must be >= 0");
  if (!(o.scale_lr > 0) || !std::isfinite(o.scale_lr)) fail("--scale-lr", "must be positive");
  if (!(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1)) fail("--min-lr-ratio", "must be in [0, 1]");
  for (const auto& [v, name] : {std::pair{o.eval_every, "--eval-every"}, {o.save_every, "--save-every"},
                                {o.stop_after, "--stop-after"}, {o.eval_windows, "--eval-windows"}})
    if (v < 0) fail(name, "must be >= 0");
  if (o.state_path.empty()) fail("--state", "a state path is required");
  if (model.device() != Device::CPU) fail("--device", "training runs on the CPU only for now");
  const int64_t n_windows = (int64_t(train_ids.size()) - 1) / o.seqlen;
  if (n_windows < 1)
    fail("--train", "{} tokens hold no window of --seqlen {} + 1", train_ids.size(), o.seqlen);

  TrainBlocks blocks;
  build_params(model, o, blocks);
  std::vector<Param*> params = all_params(blocks);
  TrainResult res;
  for (Param* p : params) res.trainable += p->value.numel();
  if (o.progress)
    std::fprintf(stderr, "[train] %s: %lld trainable parameters, %lld windows of %lld tokens\n",
                 train_mode_name(o.mode).c_str(), (long long)res.trainable, (long long)n_windows,
                 (long long)o.seqlen + 1);

  LmWeights lm;
  lm.embed = model.checkpoint().get("model.embed_tokens.weight").to(DType::F32);
  lm.final_norm = model.checkpoint().get("model.norm.weight").to(DType::F32);
  if (!cfg.tied_embeddings) lm.head = model.checkpoint().get("lm_head.weight").to(DType::F32);
  ModelGrad mg(cfg, lm, blocks);
  LmWeights frozen;  // no gradient for the embedding, norms or head: every mode freezes them

  nlohmann::json fp = fingerprint_in;
  fp["mode"] = train_mode_name(o.mode);
  fp["steps"] = o.steps;
  fp["seqlen"] = o.seqlen;
  fp["batch"] = o.batch;
  fp["accum"] = o.accum;
  fp["lr"] = o.lr;
  fp["warmup"] = o.warmup;
  fp["min_lr_ratio"] = o.min_lr_ratio;
  fp["weight_decay"] = o.weight_decay;
  fp["clip"] = o.clip;
  fp["adam"] = {o.beta1, o.beta2, o.eps};
  fp["rank"] = o.rank;
  fp["alpha"] = o.alpha;
  fp["scale_lr"] = o.scale_lr;
  fp["recipe"] = o.recipe;
  fp["seed"] = o.seed;
  fp["eval"] = {o.eval_every, o.eval_ctx, o.eval_windows, eval_ids.size()};
  fp["train_tokens_sha256"] =
      sha256_hex(std::string_view(reinterpret_cast<const char*>(train_ids.data()),
                                  train_ids.size() * sizeof(int32_t)));
  const std::string fingerprint = fp.dump();

  int64_t start = 0;
  if (std::filesystem::exists(o.state_path)) {
    start = load_state(o.state_path, params, fingerprint, o.steps, res.curve);
    res.resumed_from = start;
    if (o.progress)
      std::fprintf(stderr, "[train] resuming from step %lld of %lld (%s)\n", (long long)start,
                   (long long)o.steps, o.state_path.c_str());
  }

  auto evaluate_now = [&](int64_t step) {
    if (eval_ids.empty()) return;
    export_into(model, blocks);
    EvalOptions eo;
    eo.ctx = o.eval_ctx;
    eo.max_windows = o.eval_windows;
    eo.progress = false;
    const EvalResult r = evaluate(model, eval_ids, eo, cfg.bos_id);
    res.curve.push_back({{"step", step}, {"eval_ppl", r.ppl}, {"eval_nll", r.nll},
                         {"eval_tokens", r.tokens}, {"protocol", r.protocol}});
    if (o.progress)
      std::fprintf(stderr, "[train] step %lld: eval ppl %.4f (%s, %lld tokens)\n",
                   (long long)step, r.ppl, r.protocol.c_str(), (long long)r.tokens);
  };
  if (start == 0) evaluate_now(0);

  WindowOrder order(n_windows, o.seed);
  const int64_t per_step = o.batch * o.accum;
  const int64_t tokens_per_step = per_step * o.seqlen;
  const auto t0 = std::chrono::steady_clock::now();
  auto last_line = t0 - std::chrono::hours(1);
  const bool tty = isatty(2);
  for (int64_t step = start + 1; step <= o.steps; ++step) {
    for (Param* p : params) p->grad = Tensor::zeros(p->value.shape(), DType::F32, p->value.device());
    double nll = 0;
    for (int64_t k = 0; k < per_step; ++k) {
      const int64_t w = order.window((step - 1) * per_step + k);
      const auto win = train_ids.subspan(size_t(w * o.seqlen), size_t(o.seqlen + 1));
      nll += mg.loss_and_grad(win, 1.0 / double(tokens_per_step), frozen);
    }
    const double loss = nll / double(tokens_per_step);
    if (!std::isfinite(loss))
      fail("train", "the loss is {} at step {} (try a lower --lr)", loss, step);
    double sumsq = 0;
    for (Param* p : params) sumsq += ops::norm_stats(p->grad).sumsq;
    const double gnorm = std::sqrt(sumsq);
    if (!std::isfinite(gnorm)) fail("train", "the gradient is not finite at step {}", step);
    if (o.clip > 0 && gnorm > o.clip)
      for (Param* p : params) ops::scale(p->grad, o.clip / gnorm);
    const double lr = learning_rate(o, step);
    ops::AdamParams ap;
    ap.beta1 = o.beta1;
    ap.beta2 = o.beta2;
    ap.eps = o.eps;
    ap.step = step;
    for (Param* p : params) {
      ap.lr = lr * p->lr_scale;
      if (o.weight_decay > 0) ops::scale(p->value, 1.0 - ap.lr * o.weight_decay);  // AdamW
      ops::adam_step(p->value, p->grad, p->m, p->v, ap);
    }
    res.curve.push_back({{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm}});

    const auto now = std::chrono::steady_clock::now();
    const double el = std::chrono::duration<double>(now - t0).count();
    const bool eval_step = (o.eval_every > 0 && step % o.eval_every == 0) || step == o.steps;
    if (o.progress &&
        (eval_step || std::chrono::duration<double>(now - last_line).count() >= (tty ? 0.5 : 5.0))) {
      last_line = now;
      const double done = double(step - start);
      std::fprintf(stderr, "[train] step %lld/%lld loss %.4f lr %.2e |g| %.3f %.0f tok/s, %s left\n",
                   (long long)step, (long long)o.steps, loss, lr, gnorm,
                   done * double(tokens_per_step) / el,
                   duration(el / done * double(o.steps - step)).c_str());
      std::fflush(stderr);
    }
    if (eval_step) evaluate_now(step);
    if (step < o.steps && ((o.save_every > 0 && step % o.save_every == 0) || step == o.stop_after))
      save_state(o.state_path, params, step, fingerprint, res.curve);
    // Ctrl-C between steps: the state of this step is kept, so the same command continues.
    try {
      check_interrupted();
    } catch (const Error&) {
      if (step < o.steps) save_state(o.state_path, params, step, fingerprint, res.curve);
      throw Error(fmt::format("interrupted after step {}; the same command continues from {}",
                              step, o.state_path));
    }
    if (step == o.stop_after && step < o.steps) {
      if (o.progress)
        std::fprintf(stderr, "[train] stopped after step %lld; the same command continues from %s\n",
                     (long long)step, o.state_path.c_str());
      return res;
    }
  }
  export_into(model, blocks);
  res.finished = true;
  return res;
}

}  // namespace lrq
