// A quantized folder's model.safetensors: packed codes, scales, zero points, low-rank factors,
// permutations, LoRDS factors.
#include "quant_folder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lrq::fuzz::run_quant_folder(data, size, "model.safetensors");
  return 0;
}
