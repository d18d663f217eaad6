// Calibration windows: tokenized text cut into N seeded random windows of L tokens.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace lrq {

/// Tokenizes each file (BOS at the start of each when `add_bos`) and concatenates the streams.
/// Empty files are errors naming the file.
std::vector<int32_t> tokenize_files(const Tokenizer& tok, const std::vector<std::string>& files,
                                    bool add_bos);

/// N windows of L consecutive tokens at seeded uniform random offsets (as GPTQ draws them).
/// The stream must hold at least N x L tokens, else an Error naming `what` and the counts.
std::vector<std::vector<int32_t>> draw_windows(std::span<const int32_t> stream, int64_t n,
                                               int64_t L, uint64_t seed,
                                               const std::string& what);

}  // namespace lrq
