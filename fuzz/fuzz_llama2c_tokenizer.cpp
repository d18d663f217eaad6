// llama2.c tokenizer.bin: loading (by content, as the CLI does), then a round trip of real text.
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lrq::fuzz::put("tok.bin", data, size);
  lrq::fuzz::expect_clean([&] { lrq::fuzz::load_and_tokenize(path); });
  return 0;
}
