#include "fuzz_util.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/gguf_export.h"
#include "formats/load_model.h"
#include "formats/save.h"
#include "io/safetensors.h"
#include "quant/pipeline.h"
#include "quant/recipe.h"
#include "tokenizer/tokenizer.h"

namespace lrq::fuzz {

namespace fs = std::filesystem;

namespace {
struct Scratch {
  std::string dir;
  Scratch() {
    // tmpfs keeps the per-input write off the disk: libFuzzer writes every input once.
    const char* base = std::getenv("LRQ_FUZZ_TMP");
    std::string root = base ? base : (fs::is_directory("/dev/shm") ? "/dev/shm" : fs::temp_directory_path().string());
    dir = root + "/lrq-fuzz-" + std::to_string(getpid());
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

constexpr int64_t kHidden = 32, kInter = 64, kHeads = 2, kKvHeads = 1, kVocab = 32, kLayers = 1;

std::vector<float> normal(size_t n, uint64_t seed, float sd) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
}  // namespace

const std::string& scratch() {
  static Scratch s;
  return s.dir;
}

std::string put(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

std::string put(const std::string& name, std::string_view text) {
  return put(name, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

std::string link_dir(const std::string& name, const std::string& from, const std::string& except) {
  const std::string dir = scratch() + "/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(from))
    if (e.is_regular_file() && e.path().filename() != except)
      fs::create_symlink(fs::absolute(e.path()), dir + "/" + e.path().filename().string());
  return dir;
}

void load_and_run(const std::string& path) {
  auto model = load_model(path);
  auto cache = model->make_cache(4);
  const int32_t ids[2] = {1, 5};
  model->forward(ids, cache, true);
}

void load_and_tokenize(const std::string& path) {
  auto tok = load_tokenizer(path);
  tok->decode(tok->encode(" Hello, world! \u00e9t\u00e9 \u20ac 12\n\tx", true));
}

void write_tiny_hf(const std::string& dir) {
  fs::create_directories(dir);
  const int64_t hd = kHidden / kHeads, kv = kKvHeads * hd;
  nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}},
                      {"model_type", "llama"},
                      {"hidden_size", kHidden},
                      {"intermediate_size", kInter},
                      {"num_hidden_layers", kLayers},
                      {"num_attention_heads", kHeads},
                      {"num_key_value_heads", kKvHeads},
                      {"vocab_size", kVocab},
                      {"max_position_embeddings", 64},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0},
                      {"hidden_act", "silu"},
                      {"tie_word_embeddings", false},
                      {"bos_token_id", 1},
                      {"eos_token_id", 2},
                      {"torch_dtype", "float32"}};
  std::ofstream(dir + "/config.json") << c.dump(2);
  std::vector<std::pair<std::string, Tensor>> t;
  uint64_t seed = 1;
  auto mat = [&](const std::string& name, int64_t m, int64_t n) {
    t.emplace_back(name, Tensor::from(normal(size_t(m * n), seed++, 0.1f), {m, n}));
  };
  auto ones = [&](const std::string& name) {
    t.emplace_back(name, Tensor::from(std::vector<float>(size_t(kHidden), 1.0f), {kHidden}));
  };
  mat("model.embed_tokens.weight", kVocab, kHidden);
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ones(p + "input_layernorm.weight");
    ones(p + "post_attention_layernorm.weight");
    mat(p + "self_attn.q_proj.weight", kHidden, kHidden);
    mat(p + "self_attn.k_proj.weight", kv, kHidden);
    mat(p + "self_attn.v_proj.weight", kv, kHidden);
    mat(p + "self_attn.o_proj.weight", kHidden, kHidden);
    mat(p + "mlp.gate_proj.weight", kInter, kHidden);
    mat(p + "mlp.up_proj.weight", kInter, kHidden);
    mat(p + "mlp.down_proj.weight", kHidden, kInter);
  }
  ones("model.norm.weight");
  mat("lm_head.weight", kVocab, kHidden);
  write_safetensors(dir + "/model.safetensors", t);
}

void write_tiny_quantized(const std::string& hf_dir, const std::string& out_dir,
                          const std::string& recipe) {
  auto model = load_model(hf_dir);
  std::mt19937_64 g(7);
  std::vector<std::vector<int32_t>> windows(8, std::vector<int32_t>(32));
  for (auto& w : windows)
    for (auto& id : w) id = int32_t(g() % kVocab);
  QuantizeOptions o;
  o.recipe = parse_recipe(recipe);
  o.progress = false;
  quantize_model(*model, windows, o);
  SaveOptions so;
  so.out_dir = out_dir;
  so.force = true;
  so.provenance = {{"recipe", recipe}};
  save_quantized(*model, so);
}

void write_tiny_llama2c(const std::string& path) {
  const int64_t hd = kHidden / kHeads, kv = kKvHeads * hd, seq = 64;
  const int32_t h[7] = {int32_t(kHidden), int32_t(kInter), int32_t(kLayers), int32_t(kHeads),
                        int32_t(kKvHeads), int32_t(kVocab), int32_t(seq)};
  const int64_t L = kLayers, d = kHidden;
  const int64_t floats = kVocab * d + L * d + L * d * d + 2 * L * d * kv + L * d * d + L * d +
                         3 * L * kInter * d + d + seq * hd;  // last: legacy freq_cis tables
  std::vector<float> w = normal(size_t(floats), 99, 0.1f);
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(h), sizeof h);
  f.write(reinterpret_cast<const char*>(w.data()), std::streamsize(w.size() * sizeof(float)));
}

void write_tiny_gguf(const std::string& hf_dir, const std::string& path, const std::string& type) {
  SpmVocab v;
  v.tokens = {"<unk>", "<s>", "</s>", "<0x0A>", "<0x20>"};
  v.types = {2, 3, 3, 6, 6};  // SentencePiece: unknown, control, byte
  for (const char* p : {"\u2581", "\u2581a", "a", "b", "c", "ab", "\u2581ab", "d",
                        "e", "l", "o", "H", "\u2581H", "lo", "llo", "el", ",", "!", "1", "2",
                        "w", "r", "\u2581w", "or", "ld", "\u00e9", "t"}) {
    v.tokens.push_back(p);
    v.types.push_back(1);
  }
  v.scores.resize(v.tokens.size());
  for (size_t i = 0; i < v.scores.size(); ++i) v.scores[i] = -float(i);
  v.unk = 0;
  v.bos = 1;
  v.eos = 2;
  auto model = load_model(hf_dir);
  GgufExportOptions o;
  o.type = type;
  o.name = "tiny";
  export_gguf(*model, v, o, path);
}

}  // namespace lrq::fuzz
