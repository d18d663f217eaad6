// fuzz_make_seeds OUT_DIR [SHARED_DIR]: writes OUT_DIR/<target>/ seed files for every target.
// Seeds are real files (the embedded lab-s model's config and tokenizer, tiny models of every
// stored layer kind written by the real save path, llama2.c files from ../shared when present)
// plus the inputs that once broke the tool (issue 25), so each run starts from them.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "fuzz_util.h"
#include "quant_folder.h"

namespace fs = std::filesystem;
using namespace lrq::fuzz;

namespace {
std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

struct Corpus {
  std::string dir;
  int n = 0;
  Corpus(const std::string& root, const std::string& target) : dir(root + "/" + target) {
    fs::create_directories(dir);
  }
  void add(std::string_view bytes) {
    std::ofstream(dir + "/seed-" + std::to_string(n++), std::ios::binary)
        << bytes;
  }
  void add_file(const std::string& path) {
    if (fs::is_regular_file(path)) add(slurp(path));
  }
};

std::string nested(char open, char close, int depth, std::string_view inner = "") {
  return std::string(size_t(depth), open) + std::string(inner) + std::string(size_t(depth), close);
}

std::string safetensors_with_header(const std::string& header) {
  std::string s(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s + header;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: fuzz_make_seeds OUT_DIR [SHARED_DIR]\n";
    return 2;
  }
  const std::string out = argv[1];
  const std::string shared = argc > 2 ? argv[2] : std::string(LRQ_SOURCE_DIR) + "/../shared";
  const std::string repo = LRQ_SOURCE_DIR;
  try {
    const auto& bases = quant_bases();  // also writes scratch()/tiny-hf
    const std::string hf = scratch() + "/tiny-hf";

    Corpus st(out, "safetensors");
    for (const auto& b : bases) st.add_file(b + "/model.safetensors");
    // Issue 25's stack overflows (60k nested arrays, 20k nested groups) are regression tests in
    // the suite, at full size; here a shallower form keeps -max_len, and so every mutation, small.
    st.add(safetensors_with_header(nested('[', ']', 2000)));
    st.add(safetensors_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})") +
           std::string(8, '\0'));

    Corpus cfg(out, "hf_config");
    cfg.add_file(repo + "/models/lab-s/config.json");
    cfg.add_file(hf + "/config.json");
    for (const auto& b : bases) cfg.add_file(b + "/config.json");
    cfg.add(R"({"hidden_size":)" + nested('[', ']', 2000) + "}");
    cfg.add(R"({"rms_norm_eps": 1e39})");

    Corpus sp(out, "sentencepiece");
    sp.add_file(repo + "/models/lab-s/tokenizer.model");

    Corpus l2t(out, "llama2c_tokenizer");
    l2t.add_file(shared + "/models/stories260K/tok512.bin");
    l2t.add_file(repo + "/models/lab-s/tokenizer.model");

    Corpus l2m(out, "llama2c_model");
    write_tiny_llama2c(scratch() + "/tiny.bin");
    l2m.add_file(scratch() + "/tiny.bin");

    Corpus qc(out, "quant_config"), qt(out, "quant_tensors");
    for (size_t k = 0; k < bases.size(); ++k) {
      const std::string tag(1, char(k));
      qc.add(tag + slurp(bases[k] + "/config.json"));
      qt.add(tag + slurp(bases[k] + "/model.safetensors"));
    }

    Corpus gg(out, "gguf");
    for (const char* type : {"f32", "f16", "q8_0", "q4_0", "q4_1"}) {
      const std::string g = scratch() + "/tiny-" + type + ".gguf";
      write_tiny_gguf(hf, g, type);
      gg.add_file(g);
    }

    Corpus rc(out, "recipe");
    for (const auto& r : quant_recipes()) rc.add(r + "\n" + "mlp\\.down=" + r);
    rc.add("gptq:w4g128,act_order\n^model\\.layers\\.(0|31)\\.self_attn\\.v_proj$=gptq:w8g128");
    rc.add("lords:b3,objective=obs,assign=gptq\n.*=fp");
    rc.add("flrq:w3g128,residual=gptq\n" + nested('(', ')', 2000, "a") + "=rtn:w4");
    rc.add("rtn:w4\n(a*)*b=rtn:w4");  // backtracking
    rc.add("gptq:w4g128,rank=4294967297+lr:r2147483648\nx=awq:w3g64,base=gptq");
    std::cout << "fuzz seeds written to " << out << "\n";
  } catch (const std::exception& e) {
    std::cerr << "fuzz_make_seeds: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
