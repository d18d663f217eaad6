// llama2.c checkpoints: header, sizes, then a forward pass over every weight.
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lrq::fuzz::put("model.bin", data, size);
  lrq::fuzz::expect_clean([&] { lrq::fuzz::load_and_run(path); });
  return 0;
}
