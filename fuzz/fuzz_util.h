// Shared pieces of the libFuzzer targets (fuzz/README.md): the loaders take paths, so each input
// is written to a per-process scratch folder (tmpfs where there is one) and opened from there,
// exactly as a user's file would be.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>

#include "core/error.h"

namespace lrq::fuzz {

/// A folder of this process's own, created on first use and removed at exit.
const std::string& scratch();
/// Writes `size` bytes to scratch()/name (replacing it); returns the path.
std::string put(const std::string& name, const uint8_t* data, size_t size);
std::string put(const std::string& name, std::string_view text);
/// scratch()/name (created fresh) with a symbolic link to each regular file of `from` except
/// `except`, which the caller writes.
std::string link_dir(const std::string& name, const std::string& from, const std::string& except);

/// Runs `f`: an lrq::Error is the clean outcome for bad input and is swallowed, unless it is an
/// internal assertion (LRQ_ASSERT), which a file must never be able to reach; a message of more
/// than one line breaks the CLI's contract too. Anything else escapes to libFuzzer, which reports
/// it (an uncaught exception aborts).
template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string_view m = e.what();
    if (m.rfind("internal error", 0) == 0 || m.find('\n') != std::string_view::npos) {
      std::fprintf(stderr, "fuzz: bad error message: %s\n", e.what());
      std::abort();
    }
  }
}

/// What every model target does with a file that loads: the model (any format load_model
/// takes) run on two tokens, so that tensors that load but do not fit the graph are exercised.
void load_and_run(const std::string& path);
/// Loads a tokenizer by content and round-trips a mixed-script text through it.
void load_and_tokenize(const std::string& path);

/// Tiny models for the seeds and as the fixed half of the two-file targets: an F32 Hugging Face
/// folder (hidden 32, 1 block, vocabulary 32: small files keep every mutation cheap), and that
/// model quantized with `recipe` on random calibration windows, written by the real save path.
void write_tiny_hf(const std::string& dir);
void write_tiny_quantized(const std::string& hf_dir, const std::string& out_dir,
                          const std::string& recipe);
/// A llama2.c checkpoint of the same tiny shape (version 0 layout, shared classifier).
void write_tiny_llama2c(const std::string& path);
/// The tiny model exported to GGUF as `type` ("f32", "f16", "q8_0", "q4_0", "q4_1") with a
/// 32-piece SentencePiece vocabulary (control, byte and normal pieces).
void write_tiny_gguf(const std::string& hf_dir, const std::string& path, const std::string& type);

}  // namespace lrq::fuzz
