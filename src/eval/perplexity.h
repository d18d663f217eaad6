// Perplexity under a named protocol (docs in shared/docs/EVAL.md), and divergence from a
// reference model on the same windows.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/llama.h"

namespace lrq {

enum class Protocol { NonOverlap, LlamaCpp };

struct EvalOptions {
  Protocol protocol = Protocol::NonOverlap;
  int64_t ctx = 512;
  int64_t max_windows = 0;  // 0: all
  bool progress = true;
};

struct EvalResult {
  std::string protocol;  // "nonoverlap-512"
  double nll = 0;        // mean over scored tokens (nats)
  double ppl = 0;
  int64_t tokens = 0;   // scored predictions
  int64_t windows = 0;
  // Against the reference model (when given).
  std::optional<double> ref_ppl, kld, top1, delta_p;
};

Protocol parse_protocol(const std::string& s);
std::string protocol_name(Protocol p, int64_t ctx);

/// The windows a protocol takes from a token stream: (start offset, scored begin position)
/// pairs; each window is ctx tokens. Errors if the stream holds no complete window.
struct Window {
  int64_t start;
  int64_t first_scored;  // predictions from position first_scored to ctx-2 are scored
};
std::vector<Window> make_windows(int64_t stream_len, const EvalOptions& o,
                                 const std::string& what);

/// Scores `stream` (the whole tokenized text, BOS first if the model adds one). `bos` is the
/// id the llamacpp protocol writes at each window start (-1: keep the token).
EvalResult evaluate(const Model& model, std::span<const int32_t> stream, const EvalOptions& o,
                    int32_t bos = -1, const Model* reference = nullptr);

}  // namespace lrq
