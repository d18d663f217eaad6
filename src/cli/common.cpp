#include "cli/common.h"

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
  if (m.tokenizer->vocab_size() > m.model->config().vocab)
    fail(tok, "tokenizer has {} tokens but the model's vocabulary is {}",
         m.tokenizer->vocab_size(), m.model->config().vocab);
  return m;
}

void add_device_option(CLI::App* sub, std::string& device) {
  sub->add_option("--device", device, "where the model runs: cpu | cuda")->capture_default_str();
}

std::vector<int32_t> tokenize_file(const Loaded& m, const std::string& path) {
  std::string text = read_text_file(path);
  if (text.empty()) fail(path, "empty text file");
  auto ids = m.tokenizer->encode(text, m.model->config().add_bos);
  if (ids.size() < 2) fail(path, "text tokenizes to fewer than 2 tokens");
  return ids;
}

}  // namespace lrq::cli
