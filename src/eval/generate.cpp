#include "eval/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace lrq {

Sampler::Sampler(const SampleOptions& o) : o_(o), state_(o.seed ^ 0x9E3779B97F4A7C15ull) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    fail("--temperature", "must be >= 0, got {}", o.temperature);
  if (!(o.top_p > 0 && o.top_p <= 1)) fail("--top-p", "must be in (0, 1], got {}", o.top_p);
}

int32_t Sampler::next(const float* z, int64_t V) {
  if (o_.temperature == 0.0f) return int32_t(std::max_element(z, z + V) - z);
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
  std::vector<double> p(V);
  double s = 0;
  for (int64_t i = 0; i < V; ++i) s += p[i] = std::exp(double(z[idx[i]] - z[idx[0]]) / o_.temperature);
  // Nucleus: the smallest prefix of the sorted distribution whose mass reaches top_p.
  int64_t keep = V;
  double c = 0;
  for (int64_t i = 0; i < V; ++i) {
    c += p[i] / s;
    if (c >= o_.top_p) {
      keep = i + 1;
      break;
    }
  }
  double mass = std::accumulate(p.begin(), p.begin() + keep, 0.0);
  // splitmix64: a tiny generator whose sequence is the same on every platform and compiler.
  state_ += 0x9E3779B97F4A7C15ull;
  uint64_t x = state_;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  double u = double(x >> 11) * 0x1.0p-53 * mass;
  for (int64_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u < 0) return idx[i];
  }
  return idx[keep - 1];
}

std::vector<int32_t> generate(const Model& model, std::span<const int32_t> prompt,
                              const SampleOptions& o,
                              const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) fail("--prompt", "the prompt encodes to no tokens");
  if (o.max_tokens < 0) fail("--max-tokens", "must be >= 0, got {}", o.max_tokens);
  const ModelConfig& cfg = model.config();
  const int64_t limit = cfg.sliding_window > 0 ? cfg.sliding_window : cfg.max_positions;
  const int64_t total = int64_t(prompt.size()) + o.max_tokens;
  if (total > limit)
    fail("--max-tokens", "prompt ({}) + new tokens ({}) exceed the model's context of {}",
         prompt.size(), o.max_tokens, limit);
  Sampler sampler(o);
  KVCache cache = model.make_cache(total);
  std::vector<int32_t> out;
  if (o.max_tokens == 0) return out;
  Tensor logits = model.forward(prompt, cache, false).to(Device::CPU);
  for (int64_t i = 0; i < o.max_tokens; ++i) {
    int32_t t = sampler.next(logits.data<float>(), cfg.vocab);
    out.push_back(t);
    if (on_token) on_token(t);
    if ((o.stop_at_eos && t == cfg.eos_id) || i + 1 == o.max_tokens) break;
    logits = model.forward(std::span<const int32_t>(&t, 1), cache, false).to(Device::CPU);
  }
  return out;
}

}  // namespace lrq
