// lrquant train: fine-tunes a model (LoRA, QLoRA, LoRDS PEFT or QAT) and writes a folder that
// eval and generate run unchanged. The loop and its state live in src/train/.
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "formats/load_model.h"
#include "formats/save.h"
#include "train/trainer.h"

namespace lrq::cli {

Command add_train(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, mode, train, eval, out, state, recipe, device = "cpu";
    TrainOptions o;
    double dropout = 0;
    bool force = false, quiet = false;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand(
      "train", "Fine-tune a model on next-token prediction: LoRA, QLoRA (NF4 base + LoRA), LoRDS "
               "multiplicative fine-tuning or quantization-aware training");
  TrainOptions& o = a->o;
  sub->add_option("--model", a->model, "model folder (dense; or LoRDS/NF-quantized for those modes)")
      ->required();
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer file (default: beside the weights)");
  sub->add_option("--mode", a->mode, "lora | qlora | lords-peft | lords-qat")->required();
  sub->add_option("--train", a->train, "training text file")->required();
  sub->add_option("--eval", a->eval, "evaluation text file (nonoverlap perplexity)");
  sub->add_option("--steps", o.steps, "optimizer steps")->required();
  sub->add_option("--seqlen", o.seqlen, "tokens per training window")->required();
  sub->add_option("--batch", o.batch, "windows per micro-batch")->required();
  sub->add_option("--lr", o.lr, "peak learning rate")->required();
  sub->add_option("--out", a->out, "output folder")->required();
  sub->add_option("--rank", o.rank,
                  "LoRA rank (lora, qlora); 0: per projection the LoRDS rank matched to block "
                  "128, i.e. lords-peft's trainable parameter count")
      ->capture_default_str();
  sub->add_option("--alpha", o.alpha, "LoRA alpha; the adapter is scaled by alpha / rank "
                                      "(default: the rank, a scale of 1)");
  sub->add_option("--scale-lr", o.scale_lr,
                  "lords-qat: the scale factors B, A learn at this multiple of --lr")
      ->capture_default_str();
  sub->add_option("--dropout", a->dropout, "LoRA dropout (only 0: not implemented)");
  sub->add_option("--recipe", o.recipe,
                  "quantization of the frozen base from a dense model (qlora: nf:b4,block64; "
                  "lords modes: lords:b4; data-free recipes only)");
  sub->add_option("--seed", o.seed, "seed of the adapters' init, the data order and the base's "
                                    "quantization")->capture_default_str();
  sub->add_option("--accum", o.accum, "micro-batches per step (gradient accumulation)")
      ->capture_default_str();
  sub->add_option("--warmup", o.warmup, "linear warmup steps")->capture_default_str();
  sub->add_option("--min-lr-ratio", o.min_lr_ratio, "cosine decay ends at lr x this")
      ->capture_default_str();
  sub->add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay")
      ->capture_default_str();
  sub->add_option("--clip", o.clip, "global gradient-norm clip (0: off)")->capture_default_str();
  sub->add_option("--eval-every", o.eval_every, "evaluate every N steps (0: first and last only)")
      ->capture_default_str();
  sub->add_option("--eval-ctx", o.eval_ctx, "evaluation window (nonoverlap-N)")
      ->capture_default_str();
  sub->add_option("--eval-windows", o.eval_windows, "evaluate at most K windows (0: all)")
      ->capture_default_str();
  sub->add_option("--save-every", o.save_every, "write the resumable state every K steps")
      ->capture_default_str();
  sub->add_option("--stop-after", o.stop_after,
                  "stop after this step with the state saved (the same command without it "
                  "continues)");
  sub->add_option("--state", a->state, "resumable state file (default: <out>.train-state)");
  add_device_option(sub, a->device);
  sub->add_flag("--force", a->force, "replace an existing output folder");
  sub->add_flag("--quiet", a->quiet, "no progress on stderr");
  return {sub, [a] {
            install_interrupt_handler();
            TrainOptions o = a->o;
            o.mode = parse_train_mode(a->mode);
            o.progress = !a->quiet;
            if (a->dropout != 0)
              fail("--dropout", "LoRA dropout is not implemented (the adapters learn through the "
                                "merged weight's gradient); pass 0");
            if (parse_device(a->device) != Device::CPU)
              fail("--device", "train runs on the CPU only for now");
            std::vector<std::pair<std::string, std::string>> inputs = {
                {a->model, "model"}, {a->train, "training file"}};
            if (!a->eval.empty()) inputs.emplace_back(a->eval, "evaluation file");
            prepare_output(a->out, a->force, inputs);
            o.state_path = a->state.empty()
                               ? std::filesystem::path(a->out).lexically_normal().string() +
                                     ".train-state"
                               : a->state;
            Loaded m = open_model(a->model, a->tokenizer, true);
            const auto train_ids = tokenize_file(m, a->train);
            std::vector<int32_t> eval_ids;
            if (!a->eval.empty()) eval_ids = tokenize_file(m, a->eval);
            const nlohmann::json fingerprint = {{"model", a->model},
                                                {"tokenizer", a->tokenizer},
                                                {"train", a->train},
                                                {"eval", a->eval}};
            const TrainResult r = train(*m.model, train_ids, eval_ids, o, fingerprint);
            if (!r.finished) return;
            // Bits per weight of the stored projections, counted as quantize counts them.
            int64_t bytes = 0, weights = 0;
            for (const auto& name : m.model->linear_names()) {
              const Linear& l = m.model->linear(name);
              bytes += int64_t(l.storage_bytes());
              weights += l.in_features() * l.out_features();
            }
            nlohmann::json prov = {
                {"recipe", "train:" + a->mode},
                {"source", a->model},
                {"total", {{"bytes", bytes}, {"weights", weights},
                           {"bpw", 8.0 * double(bytes) / double(weights)}}},
                {"training",
                 {{"mode", a->mode},
                  {"base_recipe", o.recipe},
                  {"train", a->train},
                  {"eval", a->eval},
                  {"steps", o.steps},
                  {"seqlen", o.seqlen},
                  {"batch", o.batch},
                  {"accum", o.accum},
                  {"tokens", o.steps * o.batch * o.accum * o.seqlen},
                  {"lr", o.lr},
                  {"warmup", o.warmup},
                  {"weight_decay", o.weight_decay},
                  {"clip", o.clip},
                  {"rank", o.rank},
                  {"alpha", o.alpha > 0 ? o.alpha : double(o.rank)},  // 0: each rank
                  {"scale_lr", o.scale_lr},
                  {"seed", o.seed},
                  {"trainable_parameters", r.trainable},
                  {"curve", r.curve}}}};
            save_quantized(*m.model, SaveOptions{a->out, a->force, prov});
            std::error_code ec;
            std::filesystem::remove(o.state_path, ec);
            if (!a->quiet)
              std::fprintf(stderr, "[train] wrote %s (%lld trainable parameters)\n",
                           a->out.c_str(), (long long)r.trainable);
          }};
}

}  // namespace lrq::cli
