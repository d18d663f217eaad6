#include "cli/common.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "formats/save.h"

#include "io/mapped_file.h"
#include "formats/load_model.h"

namespace lrq::cli {

Loaded open_model(const std::string& path, const std::string& tokenizer, bool need_tokenizer,
                  Device device) {
  Loaded m;
  m.model = load_model(path, device);
  std::string tok = tokenizer.empty() ? m.model->checkpoint().tokenizer_path : tokenizer;
  if (tok.empty()) {
    if (need_tokenizer)
      fail(path, "no tokenizer found beside the weights; pass --tokenizer FILE");
    return m;
  }
  m.tokenizer = load_tokenizer(tok);
  // Checkpoints pad their embedding past the tokenizer (Qwen2: 151646 tokens, 151936 rows),
  // by a few hundred rows; a tokenizer that covers much less of the vocabulary belongs to
  // another model (llama2.c's 512-token tok512.bin with a 4096-token model ran at ppl 42597).
  const int64_t tv = m.tokenizer->vocab_size(), mv = m.model->config().vocab;
  if (tv > mv || mv - tv > mv / 8)
    fail(tok, "tokenizer has {} tokens but the model's vocabulary is {}: not this model's tokenizer",
         tv, mv);
  return m;
}

void add_device_option(CLI::App* sub, std::string& device) {
  sub->add_option("--device", device, "where the model runs: cpu | cuda")->capture_default_str();
}

void add_exact_flag(CLI::App* sub, bool& exact) {
  sub->add_flag("--exact", exact,
                "GPU: exact weight x activation products in the quantized kernels (default: "
                "16-bit activations where a kernel is faster with them; docs/DECISIONS.md)");
}

void prepare_output(const std::string& out, bool force,
                    const std::vector<std::pair<std::string, std::string>>& inputs) {
  for (const std::string& line : recover_stale_output(out))
    std::fprintf(stderr, "lrquant: note: %s\n", line.c_str());
  if (std::filesystem::exists(out) && !force)
    fail(out, "output folder exists (pass --force to replace it)");
  check_output_writable(out);
  for (const auto& [path, what] : inputs) refuse_output_over_input(out, path, what);
}

std::vector<int32_t> tokenize_file(const Loaded& m, const std::string& path) {
  std::string text = read_text_file(path);
  if (text.empty()) fail(path, "empty text file");
  auto ids = m.tokenizer->encode(text, m.model->config().add_bos);
  if (ids.size() < 2) fail(path, "text tokenizes to fewer than 2 tokens");
  return ids;
}

}  // namespace lrq::cli
