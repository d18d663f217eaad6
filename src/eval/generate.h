// Text generation: greedy or sampled (temperature, nucleus), reproducible by seed.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/llama.h"

namespace lrq {

struct SampleOptions {
  int64_t max_tokens = 64;  // new tokens
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool stop_at_eos = true;
};

/// Picks the next token from one row of logits (V floats).
class Sampler {
 public:
  explicit Sampler(const SampleOptions& o);
  int32_t next(const float* logits, int64_t V);

 private:
  SampleOptions o_;
  uint64_t state_;
};

/// Generates up to max_tokens new ids after `prompt`; `on_token` sees each as it is produced.
/// Stops at EOS when asked (the EOS id is returned as the last element).
std::vector<int32_t> generate(const Model& model, std::span<const int32_t> prompt,
                              const SampleOptions& o,
                              const std::function<void(int32_t)>& on_token = {});

}  // namespace lrq
