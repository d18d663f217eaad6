// A quantized folder's config.json (quantization_config: per-layer formats, bits, ranks).
#include "quant_folder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lrq::fuzz::run_quant_folder(data, size, "config.json");
  return 0;
}
