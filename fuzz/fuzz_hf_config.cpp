// config.json of a Hugging Face folder (with an lrquant quantization_config or without).
#include "fuzz_util.h"
#include "io/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lrq::fuzz::put("config.json", data, size);
  lrq::fuzz::expect_clean([&] {
    nlohmann::json quant;
    lrq::parse_hf_config(path, &quant);
  });
  return 0;
}
