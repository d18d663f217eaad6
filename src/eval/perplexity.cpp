#include "eval/perplexity.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/progress.h"

namespace lrq {

Protocol parse_protocol(const std::string& s) {
  if (s == "nonoverlap") return Protocol::NonOverlap;
  if (s == "llamacpp") return Protocol::LlamaCpp;
  fail("--protocol", "unknown protocol '{}' (valid: nonoverlap, llamacpp)", s);
}

std::string protocol_name(Protocol p, int64_t ctx) {
  return (p == Protocol::NonOverlap ? "nonoverlap-" : "llamacpp-") + std::to_string(ctx);
}

std::vector<Window> make_windows(int64_t n, const EvalOptions& o, const std::string& what) {
  if (o.ctx < 2) fail("--ctx", "context must be at least 2 tokens, got {}", o.ctx);
  if (o.protocol == Protocol::LlamaCpp && o.ctx < 4)
    fail("--ctx", "llamacpp protocol needs a context of at least 4 tokens, got {}", o.ctx);
  int64_t count = n / o.ctx;
  if (count == 0)
    fail(what, "text has {} tokens, fewer than one window of {}", n, o.ctx);
  if (o.max_windows > 0) count = std::min(count, o.max_windows);
  std::vector<Window> w;
  // llama.cpp scores only the second half: the first half gives each prediction context.
  const int64_t first = o.protocol == Protocol::NonOverlap ? 0 : o.ctx / 2;
  for (int64_t i = 0; i < count; ++i) w.push_back({i * o.ctx, first});
  return w;
}

namespace {
// log-softmax of one row in double (the sums of 4096+ exps lose digits in float).
void log_softmax(const float* z, int64_t n, std::vector<double>& out) {
  out.resize(n);
  double mx = z[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, double(z[i]));
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(double(z[i]) - mx);
  const double lse = mx + std::log(s);
  for (int64_t i = 0; i < n; ++i) out[i] = double(z[i]) - lse;
}
}  // namespace

EvalResult evaluate(const Model& model, std::span<const int32_t> stream, const EvalOptions& o,
                    int32_t bos, const Model* reference) {
  const ModelConfig& cfg = model.config();
  const int64_t limit = cfg.sliding_window > 0 ? cfg.sliding_window : cfg.max_positions;
  if (o.ctx > limit)
    fail("--ctx", "context {} is longer than the model supports ({})", o.ctx, limit);
  if (reference && reference->config().vocab != cfg.vocab)
    fail("--reference", "reference vocabulary {} differs from the model's {}",
         reference->config().vocab, cfg.vocab);
  auto windows = make_windows(int64_t(stream.size()), o, "text");

  EvalResult r;
  r.protocol = protocol_name(o.protocol, o.ctx);
  double nll = 0, ref_nll = 0, kld = 0, dp = 0;
  int64_t top1 = 0, n = 0;
  KVCache cache = model.make_cache(o.ctx);
  KVCache ref_cache = reference ? reference->make_cache(o.ctx) : KVCache{};
  std::vector<int32_t> ids(o.ctx);
  Progress prog("eval " + r.protocol, int64_t(windows.size()), o.progress);
  const int64_t V = cfg.vocab;
  for (size_t w = 0; w < windows.size(); ++w) {
    const Window& win = windows[w];
    std::copy(stream.begin() + win.start, stream.begin() + win.start + o.ctx, ids.begin());
    if (o.protocol == Protocol::LlamaCpp && bos >= 0) ids[0] = bos;
    cache.length = 0;
    Tensor logits = model.forward(ids, cache, true).to(Device::CPU);
    Tensor ref_logits;
    if (reference) {
      ref_cache.length = 0;
      ref_logits = reference->forward(ids, ref_cache, true).to(Device::CPU);
    }
    const float* zq = logits.data<float>();
    const float* zp = reference ? ref_logits.data<float>() : nullptr;
    // Per-position terms summed in order afterwards: an OpenMP reduction adds the threads'
    // sums in the order they finish, which made the last digits depend on the machine.
    const int64_t t0 = win.first_scored, nt = o.ctx - 1 - t0;
    std::vector<double> t_nll(size_t(nt), 0.0), t_ref(size_t(nt), 0.0), t_kld(size_t(nt), 0.0),
        t_dp(size_t(nt), 0.0);
    std::vector<int64_t> t_top1(size_t(nt), 0);
#pragma omp parallel for schedule(static)
    for (int64_t t = t0; t < o.ctx - 1; ++t) {
      const size_t k = size_t(t - t0);
      std::vector<double> lp, lq;
      const int32_t target = ids[t + 1];
      log_softmax(zq + t * V, V, lq);
      t_nll[k] = -lq[target];
      if (zp) {
        log_softmax(zp + t * V, V, lp);
        t_ref[k] = -lp[target];
        double kl = 0;
        int64_t am = 0, bm = 0;
        for (int64_t i = 0; i < V; ++i) {
          kl += std::exp(lp[i]) * (lp[i] - lq[i]);
          if (lq[i] > lq[am]) am = i;
          if (lp[i] > lp[bm]) bm = i;
        }
        t_kld[k] = kl;
        t_top1[k] = am == bm;
        t_dp[k] = std::exp(lq[target]) - std::exp(lp[target]);
      }
    }
    double w_nll = 0, w_ref = 0, w_kld = 0, w_dp = 0;
    int64_t w_top1 = 0;
    for (size_t k = 0; k < size_t(nt); ++k) {
      w_nll += t_nll[k];
      w_ref += t_ref[k];
      w_kld += t_kld[k];
      w_dp += t_dp[k];
      w_top1 += t_top1[k];
    }
    nll += w_nll;
    ref_nll += w_ref;
    kld += w_kld;
    dp += w_dp;
    top1 += w_top1;
    n += o.ctx - 1 - win.first_scored;
    prog.update(int64_t(w + 1), "ppl=" + std::to_string(std::exp(nll / double(n))));
  }
  r.tokens = n;
  r.windows = int64_t(windows.size());
  r.nll = nll / double(n);
  r.ppl = std::exp(r.nll);
  if (reference) {
    r.ref_ppl = std::exp(ref_nll / double(n));
    r.kld = kld / double(n);
    r.top1 = double(top1) / double(n);
    r.delta_p = dp / double(n);
  }
  prog.finish("ppl=" + std::to_string(r.ppl));
  return r;
}

}  // namespace lrq
