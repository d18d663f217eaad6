// GGUF files: header, metadata key/values, tensor infos, block-type data (decoded at load), the
// llama metadata and RoPE order, then the tokenizer rebuilt from the file and a two-token forward.
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lrq::fuzz::put("model.gguf", data, size);
  lrq::fuzz::expect_clean([&] { lrq::fuzz::load_and_run(path); });
  lrq::fuzz::expect_clean([&] { lrq::fuzz::load_and_tokenize(path); });
  return 0;
}
