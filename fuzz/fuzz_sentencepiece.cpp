// SentencePiece tokenizer.model (protobuf): loading, then encoding and decoding real text so a
// model that loads but holds inconsistent pieces is exercised too.
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lrq::fuzz::put("tokenizer.model", data, size);
  lrq::fuzz::expect_clean([&] { lrq::fuzz::load_and_tokenize(path); });
  return 0;
}
