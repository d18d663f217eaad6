#include "calib/windows.h"

#include <random>

#include "core/error.h"
#include "io/mapped_file.h"

namespace lrq {

std::vector<int32_t> tokenize_files(const Tokenizer& tok, const std::vector<std::string>& files,
                                    bool add_bos) {
  std::vector<int32_t> all;
  for (const auto& f : files) {
    std::string text = read_text_file(f);
    if (text.empty()) fail(f, "empty text file");
    auto ids = tok.encode(text, add_bos);
    all.insert(all.end(), ids.begin(), ids.end());
  }
  return all;
}

std::vector<std::vector<int32_t>> draw_windows(std::span<const int32_t> stream, int64_t n,
                                               int64_t L, uint64_t seed,
                                               const std::string& what) {
  if (n <= 0) fail("--nsamples", "must be positive, got {}", n);
  if (L <= 1) fail("--seqlen", "must be at least 2, got {}", L);
  const int64_t len = int64_t(stream.size());
  // n * L in 64 bits can wrap for hostile arguments (issue 25): compare by division instead.
  if (n > len / L)
    fail(what, "calibration text has {} tokens, fewer than {} windows x {} tokens", len, n, L);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, len - L);
  std::vector<std::vector<int32_t>> out;
  for (int64_t i = 0; i < n; ++i) {
    int64_t s = pick(rng);
    out.emplace_back(stream.begin() + s, stream.begin() + s + L);
  }
  return out;
}

}  // namespace lrq
