// safetensors: header length, JSON header, dtypes, shapes, offsets, and every tensor's bytes.
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lrq::fuzz::put("model.safetensors", data, size);
  lrq::fuzz::expect_clean([&] {
    auto f = lrq::SafetensorsFile::open(path);
    volatile uint8_t sink = 0;
    for (const auto& [name, e] : f.entries()) {
      const lrq::Tensor t = f.get(name);
      // Reading every byte makes ASan check the view lies inside the mapping.
      const auto* p = static_cast<const uint8_t*>(t.numel() ? t.raw() : nullptr);
      for (size_t i = 0; i < t.nbytes(); ++i) sink = sink ^ p[i];
    }
  });
  return 0;
}
