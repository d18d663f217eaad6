// Fine-tuning a whole model on next-token prediction (issue 22, CPU half): the parameters of one
// mode (train/proj_param.h) in every projection, the rest frozen; AdamW with linear warmup and
// cosine decay, gradient accumulation and global-norm clipping; windows of a token stream in a
// seeded order; perplexity on an evaluation stream every N steps; a resumable state.
//
// Resuming: every `save_every` steps (and when stopped early) the state file holds the
// trainable tensors, both Adam moments, the step, the learning curve so far and a fingerprint
// of everything that decides the result (options, model, data). The data order and the
// schedule are functions of the step alone (the shuffle of epoch e is drawn from the seed and
// e), so a run started again with the same command loads the state and continues with the
// same bits an uninterrupted run would have: same parameters, same moments, same next window.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/llama.h"

namespace lrq {

enum class TrainMode { Lora, Qlora, LordsPeft, LordsQat };
/// "lora", "qlora", "lords-peft", "lords-qat"; anything else is an Error naming `arg`.
TrainMode parse_train_mode(const std::string& s, const std::string& arg = "--mode");
std::string train_mode_name(TrainMode m);

struct TrainOptions {
  TrainMode mode = TrainMode::Lora;
  int64_t steps = 0;
  int64_t seqlen = 256;   // tokens read per window (each window holds seqlen + 1 tokens)
  int64_t batch = 1;      // windows per micro-batch
  int64_t accum = 1;      // micro-batches per optimizer step
  double lr = 1e-4;
  int64_t warmup = 0;     // steps of linear warmup from lr / warmup to lr
  double min_lr_ratio = 0.1;  // the cosine decays from lr to lr * min_lr_ratio at the last step
  double weight_decay = 0;    // AdamW's decoupled decay, applied to every trainable tensor
  double clip = 1.0;          // global gradient norm limit (0: none)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t rank = 8;           // LoRA rank (lora, qlora); 0: per projection, the LoRDS rank
                              // matched to block 128 (lords-peft's trainable count)
  double alpha = 0;           // LoRA alpha (0: = rank, a scale of 1)
  double scale_lr = 1.0;      // lords-qat: B and A learn at this multiple of lr
  std::string recipe;         // the frozen base's quantization ("" = the mode's default)
  uint64_t seed = 0;
  int64_t eval_every = 0;     // 0: evaluate only before the first and after the last step
  int64_t eval_ctx = 512;     // nonoverlap-N windows of the evaluation stream
  int64_t eval_windows = 0;   // at most this many evaluation windows (0: all)
  int64_t save_every = 0;     // state every K steps (0: only when stopped early)
  int64_t stop_after = 0;     // stop after this step with the state saved (0: run to the end)
  std::string state_path;     // the resumable state (a safetensors file)
  bool progress = true;       // a progress line on stderr
};

struct TrainResult {
  bool finished = false;      // false: stopped by stop_after, the state holds the run
  int64_t resumed_from = 0;   // step the run continued from (0: a fresh start)
  nlohmann::json curve = nlohmann::json::array();  // per step: loss, lr, grad norm; eval ppl
  int64_t trainable = 0;      // trainable parameter count
};

/// Trains `model` (loaded from a dense checkpoint, or a LoRDS-quantized one for the lords
/// modes) on windows of `train` and evaluates it on `eval` (may be empty: no evaluation);
/// `fingerprint` is folded into the state's check (the command's inputs). On a finished run the
/// model's projections are the trained layers, ready for save_quantized. `bos`: the id the
/// evaluation protocol uses (the model's). Errors name the option or file at fault.
TrainResult train(Model& model, std::span<const int32_t> train, std::span<const int32_t> eval,
                  const TrainOptions& o, const nlohmann::json& fingerprint);

}  // namespace lrq
