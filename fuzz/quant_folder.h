// The two targets on a quantized folder share this: the first input byte picks one of a few
// tiny quantized models (one per stored layer kind), the rest replaces one of its files, and
// the folder is loaded and run on two tokens.
#pragma once
#include <string>
#include <vector>

#include "fuzz_util.h"

namespace lrq::fuzz {

/// One recipe per layer kind the runtime registers: packed (asymmetric, symmetric), packed with
/// act_order and a low-rank branch, FLRQ, LoPRo's transform, NormalFloat, LoRDS.
inline const std::vector<std::string>& quant_recipes() {
  static const std::vector<std::string> r = {
      "rtn:w4g32", "gptq:w3g32,sym,act_order+lr:r4", "flrq:w3g32,rank=4", "lopro:w4g32,block=32",
      "nf:b4,block=32", "lords:b3,rank=2,steps=5"};
  return r;
}

/// The folders, written once per process under scratch()/base-<k>.
inline const std::vector<std::string>& quant_bases() {
  static const std::vector<std::string> dirs = [] {
    const std::string hf = scratch() + "/tiny-hf";
    write_tiny_hf(hf);
    std::vector<std::string> d;
    for (size_t k = 0; k < quant_recipes().size(); ++k) {
      d.push_back(scratch() + "/base-" + std::to_string(k));
      write_tiny_quantized(hf, d.back(), quant_recipes()[k]);
    }
    return d;
  }();
  return dirs;
}

inline void run_quant_folder(const uint8_t* data, size_t size, const std::string& file) {
  if (size == 0) return;
  const auto& bases = quant_bases();
  const size_t k = data[0] % bases.size();
  // One folder per base, made once: links to the base's files, except the one this input
  // replaces (copying the folder per input halved the executions per second).
  static std::vector<std::string> cases(bases.size());
  if (cases[k].empty()) {
    cases[k] = link_dir("case-" + std::to_string(k) + "-" + file, bases[k], file);
  }
  const std::string& dir = cases[k];
  std::FILE* f = std::fopen((dir + "/" + file).c_str(), "wb");
  if (!f) std::abort();
  if (size > 1 && std::fwrite(data + 1, 1, size - 1, f) != size - 1) std::abort();
  std::fclose(f);
  expect_clean([&] { load_and_run(dir); });
}

}  // namespace lrq::fuzz
