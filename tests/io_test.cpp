// Checkpoint input/output: safetensors, config.json, llama2.c, and the broken-input corpus.
//
// Every broken input is generated at runtime into a temporary folder (from a tiny valid model
// built here with an independent raw safetensors writer), so the repository holds no binaries.
// Each must raise an lrq::Error whose message is one line naming the file and the problem.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace lrq;
namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

// ------------------------------------------------------------------ helpers

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void spit(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

/// Runs `fn`, which must throw lrq::Error with a one-line message containing `file` and `keyword`.
void expect_error(const std::function<void()>& fn, const std::string& file,
                  const std::string& keyword) {
  try {
    fn();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
    EXPECT_NE(msg.find(file), std::string::npos) << "message does not name " << file << ": " << msg;
    EXPECT_NE(msg.find(keyword), std::string::npos)
        << "message lacks '" << keyword << "': " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected lrq::Error, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "no error for " << file << " (expected '" << keyword << "')";
}

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

/// 8-byte little-endian header length, header text, data: a safetensors file written by hand.
std::string st_bytes(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + header + data;
}

struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

/// A valid safetensors file, tensors back to back in the given order (independent of lrq's writer).
std::string raw_safetensors(const std::vector<RawTensor>& ts) {
  ordered_json h = ordered_json::object();
  std::string data;
  for (auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  return st_bytes(h.dump(), data);
}

// Deterministic values: tensor k, element i (multiples of 1/64, exact in any float arithmetic).
float tiny_value(int k, int64_t i) { return float((i * 7 + k * 13) % 101 - 50) / 64.0f; }

/// A tiny Llama folder: config.json and its tensors (F32), to be written by write_model.
struct Tiny {
  json config;
  std::vector<RawTensor> tensors;

  RawTensor* find(const std::string& name) {
    for (auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
  void drop(const std::string& name) {
    std::erase_if(tensors, [&](const RawTensor& t) { return t.name == name; });
  }
};

RawTensor f32_tensor(const std::string& name, std::vector<int64_t> shape, int k) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = tiny_value(k, i);
  return {name, "F32", shape, f32_bytes(v)};
}

// hidden 8, 2 layers, 2 heads of 4, 1 kv head, intermediate 12, vocab 32.
Tiny tiny_llama() {
  Tiny t;
  t.config = {{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"hidden_size", 8},
              {"intermediate_size", 12},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 2},
              {"num_key_value_heads", 1},
              {"vocab_size", 32},
              {"max_position_embeddings", 64},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 500000.0},
              {"hidden_act", "silu"},
              {"tie_word_embeddings", false},
              {"bos_token_id", 1},
              {"eos_token_id", 2},
              {"rope_scaling", nullptr},
              {"torch_dtype", "float32"}};
  int k = 0;
  t.tensors.push_back(f32_tensor("model.embed_tokens.weight", {32, 8}, k++));
  for (int l = 0; l < 2; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    t.tensors.push_back(f32_tensor(p + "input_layernorm.weight", {8}, k++));
    t.tensors.push_back(f32_tensor(p + "self_attn.q_proj.weight", {8, 8}, k++));
    t.tensors.push_back(f32_tensor(p + "self_attn.k_proj.weight", {4, 8}, k++));
    t.tensors.push_back(f32_tensor(p + "self_attn.v_proj.weight", {4, 8}, k++));
    t.tensors.push_back(f32_tensor(p + "self_attn.o_proj.weight", {8, 8}, k++));
    t.tensors.push_back(f32_tensor(p + "post_attention_layernorm.weight", {8}, k++));
    t.tensors.push_back(f32_tensor(p + "mlp.gate_proj.weight", {12, 8}, k++));
    t.tensors.push_back(f32_tensor(p + "mlp.up_proj.weight", {12, 8}, k++));
    t.tensors.push_back(f32_tensor(p + "mlp.down_proj.weight", {8, 12}, k++));
  }
  t.tensors.push_back(f32_tensor("model.norm.weight", {8}, k++));
  t.tensors.push_back(f32_tensor("lm_head.weight", {32, 8}, k++));
  return t;
}

/// Writes `t` into a fresh folder: one model.safetensors, or `shards` shards and an index.
std::string write_model(const Tiny& t, int shards = 1) {
  std::string dir = test::temp_dir();
  spit(dir + "/config.json", t.config.dump(2));
  if (shards == 1) {
    spit(dir + "/model.safetensors", raw_safetensors(t.tensors));
    return dir;
  }
  std::vector<std::vector<RawTensor>> parts(static_cast<size_t>(shards));
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (size_t i = 0; i < t.tensors.size(); ++i) {
    size_t s = i * size_t(shards) / t.tensors.size();
    parts[s].push_back(t.tensors[i]);
    index["weight_map"][t.tensors[i].name] =
        "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
  }
  for (int s = 0; s < shards; ++s)
    spit(dir + "/model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) +
             ".safetensors",
         raw_safetensors(parts[size_t(s)]));
  spit(dir + "/model.safetensors.index.json", index.dump(2));
  return dir;
}

/// A folder with `config` as config.json (for config-only cases).
std::string write_config(const json& config) {
  std::string dir = test::temp_dir();
  spit(dir + "/config.json", config.dump(2));
  return dir;
}

/// An independent read of one tensor's raw bytes: parse the header with nlohmann, seek, read.
std::string independent_tensor_bytes(const std::string& file, const std::string& name) {
  std::ifstream f(file, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  f.read(header.data(), std::streamsize(n));
  json h = json::parse(header);
  uint64_t b = h.at(name).at("data_offsets")[0], e = h.at(name).at("data_offsets")[1];
  std::string bytes(e - b, '\0');
  f.seekg(std::streamoff(8 + n + b));
  f.read(bytes.data(), std::streamsize(e - b));
  EXPECT_TRUE(f.good()) << file;
  return bytes;
}

std::string tensor_bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), t.nbytes());
}

}  // namespace

// ------------------------------------------------------------------ files

TEST(MappedFile, MapsContentsAndAllowsEmpty) {
  std::string dir = test::temp_dir();
  spit(dir + "/a", "hello");
  auto f = MappedFile::open(dir + "/a");
  ASSERT_EQ(f->size(), 5u);
  EXPECT_EQ(std::string(f->data(), 5), "hello");
  spit(dir + "/empty", "");
  EXPECT_EQ(MappedFile::open(dir + "/empty")->size(), 0u);
  EXPECT_EQ(read_text_file(dir + "/a"), "hello");
  expect_error([&] { MappedFile::open(dir + "/nope"); }, "nope", "no such file");
  expect_error([&] { MappedFile::open(dir); }, dir, "directory");
  expect_error([&] { read_text_file(dir + "/nope.json"); }, "nope.json", "no such file");
}

TEST(MappedFile, WriteAtomicReplacesAndCleansUp) {
  std::string dir = test::temp_dir();
  write_file_atomic(dir + "/out.txt", "first");
  write_file_atomic(dir + "/out.txt", "second, longer");
  EXPECT_EQ(slurp(dir + "/out.txt"), "second, longer");
  // Renaming a file over a folder fails: the error names the target and no temporary remains.
  fs::create_directory(dir + "/target");
  expect_error([&] { write_file_atomic(dir + "/target", "x"); }, "target", "rename");
  expect_error([&] { write_file_atomic(dir + "/no/such/dir/f", "x"); }, "no/such/dir/f", "temporary");
  std::set<std::string> left;
  for (auto& e : fs::directory_iterator(dir)) left.insert(e.path().filename().string());
  EXPECT_EQ(left, (std::set<std::string>{"out.txt", "target"}));
  EXPECT_TRUE(fs::is_empty(dir + "/target"));
}

// ------------------------------------------------------------------ safetensors

TEST(Safetensors, RoundTripIsByteExact) {
  std::string dir = test::temp_dir();
  Tensor a = Tensor::from({1.5f, -2.25f, 3.0f, 1e-20f, 7.0f, -0.0f}, {2, 3});
  Tensor b = Tensor::empty({5}, DType::BF16);
  for (int i = 0; i < 5; ++i) b.at<uint16_t>(i) = uint16_t(0x3f80 + i * 3);
  Tensor c = Tensor::empty({3}, DType::U8);  // 3 bytes: would misalign anything after it
  for (int i = 0; i < 3; ++i) c.at<uint8_t>(i) = uint8_t(200 + i);
  Tensor d = Tensor::empty({2}, DType::I64);
  d.at<int64_t>(0) = -5;
  d.at<int64_t>(1) = int64_t(1) << 40;
  Tensor e = Tensor::empty({0, 4}, DType::F32);
  std::vector<std::pair<std::string, Tensor>> ts = {{"c.u8", c}, {"a", a}, {"b.bf16", b}, {"d", d}, {"empty", e}};
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "a \"quoted\" value"}};
  std::string path = dir + "/rt.safetensors";
  write_safetensors(path, ts, meta);

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.entries().size(), ts.size());
  for (auto& [name, t] : ts) {
    Tensor r = f.get(name);
    EXPECT_EQ(r.dtype(), t.dtype()) << name;
    EXPECT_EQ(r.shape(), t.shape()) << name;
    EXPECT_EQ(tensor_bytes(r), tensor_bytes(t)) << name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.raw()) % dtype_size(t.dtype()), 0u) << name;
    EXPECT_EQ(independent_tensor_bytes(path, name), tensor_bytes(t)) << name;
  }
  // Layout promised by the writer, checked on the raw file: header padded with spaces to a
  // multiple of 8; the data buffer covered without gaps (what the official reader demands).
  std::string raw = slurp(path);
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header = raw.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
  json h = json::parse(header);
  EXPECT_EQ(h.at("__metadata__").at("note"), "a \"quoted\" value");
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto& [k, v] : h.items())
    if (k != "__metadata__") ranges.push_back({v["data_offsets"][0], v["data_offsets"][1]});
  std::sort(ranges.begin(), ranges.end());
  uint64_t end = 0;
  for (auto [b, e2] : ranges) {
    EXPECT_EQ(b, end);
    end = e2;
  }
  EXPECT_EQ(8 + n + end, raw.size());

  expect_error([&] { write_safetensors(dir + "/dup.safetensors", {{"x", a}, {"x", b}}); },
               "dup.safetensors", "duplicate");
  EXPECT_FALSE(fs::exists(dir + "/dup.safetensors"));
}

TEST(Safetensors, UnalignedDataIsCopiedToAlignedMemory) {
  // A 9-byte header puts the data buffer at offset 17: the F32 tensor is misaligned in the map.
  std::string header = R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  header.append(size_t((8 - (8 + header.size()) % 8 + 1) % 8), ' ');
  ASSERT_EQ((8 + header.size()) % 4, 1u);
  std::string path = test::temp_dir() + "/odd.safetensors";
  spit(path, st_bytes(header, f32_bytes({1.25f, -3.5f, 1e30f})));
  Tensor t = SafetensorsFile::open(path).get("x");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 4, 0u);
  EXPECT_EQ(t.at<float>(0), 1.25f);
  EXPECT_EQ(t.at<float>(1), -3.5f);
  EXPECT_EQ(t.at<float>(2), 1e30f);
}

TEST(Safetensors, BrokenFilesAreOneLineErrors) {
  std::string dir = test::temp_dir();
  const std::string ok_data = f32_bytes({1, 2, 3, 4});
  auto check = [&](const std::string& name, const std::string& bytes, const std::string& keyword) {
    SCOPED_TRACE(name);
    spit(dir + "/" + name, bytes);
    expect_error([&] { SafetensorsFile::open(dir + "/" + name); }, name, keyword);
  };
  auto entry = [](const std::string& body) { return "{\"w\":{" + body + "}}"; };
  check("short.safetensors", "\x10\0\0", "too short");
  check("empty.safetensors", "", "too short");
  {
    uint64_t n = 1000;
    check("beyond.safetensors", std::string(reinterpret_cast<char*>(&n), 8) + "{}", "past the end");
    n = uint64_t(1) << 40;
    check("absurd.safetensors", std::string(reinterpret_cast<char*>(&n), 8) + "{}", "absurd");
  }
  check("notjson.safetensors", st_bytes("{\"w\": [1, 2,\n oops", ""), "not valid JSON");
  check("array.safetensors", st_bytes("[1,2]", ""), "expected an object");
  check("nodtype.safetensors", st_bytes(entry(R"("shape":[4],"data_offsets":[0,16])"), ok_data), "'dtype'");
  check("noshape.safetensors", st_bytes(entry(R"("dtype":"F32","data_offsets":[0,16])"), ok_data), "'shape'");
  check("nooffsets.safetensors", st_bytes(entry(R"("dtype":"F32","shape":[4])"), ok_data), "'data_offsets'");
  check("dtype.safetensors", st_bytes(entry(R"("dtype":"F8_E4M3","shape":[4],"data_offsets":[0,16])"), ok_data),
        "unknown dtype 'F8_E4M3'");
  check("negdim.safetensors", st_bytes(entry(R"("dtype":"F32","shape":[-4],"data_offsets":[0,16])"), ok_data),
        "negative dimension");
  check("strdim.safetensors", st_bytes(entry(R"("dtype":"F32","shape":["4"],"data_offsets":[0,16])"), ok_data),
        "expected an integer");
  check("huge.safetensors",
        st_bytes(entry(R"("dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16])"), ok_data),
        "impossibly large");
  check("reversed.safetensors", st_bytes(entry(R"("dtype":"F32","shape":[0],"data_offsets":[16,0])"), ok_data),
        "begin after end");
  check("outside.safetensors", st_bytes(entry(R"("dtype":"F32","shape":[4],"data_offsets":[4,20])"), ok_data),
        "beyond the data buffer");
  check("truncated.safetensors", st_bytes(entry(R"("dtype":"F32","shape":[4],"data_offsets":[0,16])"),
                                          ok_data.substr(0, 10)),
        "beyond the data buffer");
  check("size.safetensors", st_bytes(entry(R"("dtype":"F32","shape":[3],"data_offsets":[0,16])"), ok_data),
        "needs 12 bytes");
  check("overlap.safetensors",
        st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", ok_data),
        "overlaps tensor a");
  check("nested.safetensors",
        st_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                 R"("b":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}})", ok_data),
        "overlaps");
  check("meta.safetensors", st_bytes(R"({"__metadata__":{"k":1}})", ""), "__metadata__");
  check("name.safetensors", st_bytes("{\"bad\\nname\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}", ""),
        "bad?name");
  // A valid file still opens, and its tensor shows through.
  spit(dir + "/ok.safetensors", st_bytes(entry(R"("dtype":"F32","shape":[2,2],"data_offsets":[0,16])"), ok_data));
  auto f = SafetensorsFile::open(dir + "/ok.safetensors");
  EXPECT_EQ(f.get("w").at<float>(3), 4.0f);
  expect_error([&] { f.get("v"); }, "ok.safetensors", "missing tensor v");
}

TEST(Safetensors, CorruptionNeverEscapesAsAnotherFailure) {
  std::string dir = test::temp_dir();
  const std::string good = raw_safetensors({f32_tensor("a", {2, 3}, 1), {"b", "BF16", {3}, "abcdef"},
                                            f32_tensor("c", {4}, 2)});
  // The data buffer ends exactly at the end of the file, so every truncation must be refused.
  for (size_t len = 0; len < good.size(); ++len) {
    spit(dir + "/cut.safetensors", good.substr(0, len));
    EXPECT_THROW(SafetensorsFile::open(dir + "/cut.safetensors"), Error) << "length " << len;
  }
  // Any byte of the length field or header replaced: either a valid file or an lrq::Error.
  int opened = 0, refused = 0;
  for (size_t i = 0; i < good.size() - 40; ++i)
    for (char c : {'\0', '"', '9', '-', '}', ' ', '\xff'}) {
      std::string bad = good;
      bad[i] = c;
      spit(dir + "/flip.safetensors", bad);
      try {
        auto f = SafetensorsFile::open(dir + "/flip.safetensors");
        for (auto& [name, e] : f.entries()) EXPECT_EQ(f.get(name).nbytes(), e.end - e.begin);
        ++opened;
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
        ++refused;
      }
    }
  EXPECT_GT(opened, 0);
  EXPECT_GT(refused, 0);
}

// A value nested 60k arrays deep: printing it in the error message must not recurse per level
// (issue 25: it overflowed the stack).
std::string deep_array(int depth) { return std::string(size_t(depth), '[') + std::string(size_t(depth), ']'); }

TEST(Safetensors, DeeplyNestedHeaderValueIsAnError) {
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/deep.safetensors";
  spit(path, st_bytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":" +
                          deep_array(60000) + "}}",
                      f32_bytes({1, 2, 3, 4})));
  expect_error([&] { SafetensorsFile::open(path); }, path,
               "'data_offsets' must be an array of 2 integers, got [[[[[[[[...]]]]]]]]");
}

TEST(Safetensors, UnreadableFile) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads files whatever their mode";
  std::string dir = write_model(tiny_llama());
  ASSERT_EQ(chmod((dir + "/model.safetensors").c_str(), 0), 0);
  expect_error([&] { load_checkpoint(dir); }, "model.safetensors", "permission denied");
}

// ------------------------------------------------------------------ tiny model folders

TEST(Checkpoint, TinyLlamaLoads) {
  Tiny t = tiny_llama();
  for (int shards : {1, 3}) {
    SCOPED_TRACE(shards);
    std::string dir = write_model(t, shards);
    Checkpoint ck = load_checkpoint(dir);
    const ModelConfig& c = ck.config;
    EXPECT_EQ(c.architecture, "LlamaForCausalLM");
    EXPECT_EQ(c.model_type, "llama");
    EXPECT_EQ(c.hidden, 8);
    EXPECT_EQ(c.intermediate, 12);
    EXPECT_EQ(c.n_layers, 2);
    EXPECT_EQ(c.n_heads, 2);
    EXPECT_EQ(c.n_kv_heads, 1);
    EXPECT_EQ(c.head_dim, 4);
    EXPECT_EQ(c.vocab, 32);
    EXPECT_EQ(c.max_positions, 64);
    EXPECT_EQ(c.rope_theta, 500000.0f);
    EXPECT_EQ(c.rms_eps, 1e-5f);
    EXPECT_FALSE(c.tied_embeddings);
    EXPECT_FALSE(c.rope_interleaved);
    EXPECT_EQ(c.sliding_window, 0);
    EXPECT_EQ(c.dtype, DType::F32);
    EXPECT_TRUE(c.add_bos);
    EXPECT_TRUE(ck.quantization.is_null());
    EXPECT_EQ(ck.tokenizer_path, "");
    ASSERT_EQ(ck.tensors.size(), t.tensors.size());
    std::set<std::string> files;
    for (auto& [name, f] : ck.tensor_file) files.insert(f);
    EXPECT_EQ(files.size(), size_t(shards));
    for (auto& rt : t.tensors) EXPECT_EQ(tensor_bytes(ck.get(rt.name)), rt.bytes) << rt.name;
    EXPECT_EQ(ck.get("model.layers.1.mlp.down_proj.weight").at<float>(95), tiny_value(18, 95));
    expect_error([&] { ck.get("model.layers.2.mlp.up_proj.weight"); }, dir, "missing tensor");
  }
}

TEST(Checkpoint, ConfigVariants) {
  {  // tied, list eos, rope_parameters (transformers 5), add_bos from tokenizer_config.json
    Tiny t = tiny_llama();
    t.drop("lm_head.weight");
    t.config["tie_word_embeddings"] = true;
    t.config["eos_token_id"] = {7, 2};
    t.config.erase("rope_theta");
    t.config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1234.0}};
    t.config["dtype"] = "bfloat16";
    std::string dir = write_model(t);
    spit(dir + "/tokenizer_config.json", R"({"add_bos_token": false})");
    spit(dir + "/tokenizer.model", "x");
    Checkpoint ck = load_checkpoint(dir);
    EXPECT_TRUE(ck.config.tied_embeddings);
    EXPECT_EQ(ck.config.eos_id, 7);
    EXPECT_EQ(ck.config.rope_theta, 1234.0f);
    EXPECT_FALSE(ck.config.add_bos);
    EXPECT_EQ(ck.config.dtype, DType::F32);  // what is stored, not what config.json claims
    EXPECT_EQ(parse_hf_config(dir + "/config.json").dtype, DType::BF16);
    EXPECT_EQ(ck.tokenizer_path, dir + "/tokenizer.model");
  }
  {  // Mistral: explicit window, null window, absent window (transformers' default 4096)
    json c = tiny_llama().config;
    c["architectures"] = {"MistralForCausalLM"};
    c["sliding_window"] = 32;
    EXPECT_EQ(parse_hf_config(write_config(c) + "/config.json").sliding_window, 32);
    c["sliding_window"] = nullptr;
    ModelConfig m = parse_hf_config(write_config(c) + "/config.json");
    EXPECT_EQ(m.sliding_window, 0);
    EXPECT_EQ(m.model_type, "mistral");
    c.erase("sliding_window");
    EXPECT_EQ(parse_hf_config(write_config(c) + "/config.json").sliding_window, 4096);
  }
  {  // Qwen2: q/k/v biases required and loaded
    Tiny t = tiny_llama();
    t.config["architectures"] = {"Qwen2ForCausalLM"};
    t.config["use_sliding_window"] = false;
    t.config["sliding_window"] = 16;
    std::string dir = write_model(t);
    expect_error([&] { load_checkpoint(dir); }, "model.safetensors", "missing tensor model.layers.0.self_attn.q_proj.bias");
    for (int l = 0; l < 2; ++l)
      for (auto [p, n] : {std::pair{"q", 8}, {"k", 4}, {"v", 4}})
        t.tensors.push_back(f32_tensor("model.layers." + std::to_string(l) + ".self_attn." + p + "_proj.bias", {n}, 50));
    Checkpoint ck = load_checkpoint(write_model(t));
    EXPECT_TRUE(ck.config.qkv_bias);
    EXPECT_EQ(ck.config.model_type, "qwen2");
    EXPECT_EQ(ck.config.sliding_window, 0);
    EXPECT_FALSE(ck.config.add_bos);
    EXPECT_EQ(ck.get("model.layers.1.self_attn.k_proj.bias").at<float>(3), tiny_value(50, 3));
  }
  {  // Qwen3: head_dim independent of hidden/heads, per-head q/k norms
    Tiny t = tiny_llama();
    t.config["architectures"] = {"Qwen3ForCausalLM"};
    t.config["head_dim"] = 6;
    for (int l = 0; l < 2; ++l) {
      std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
      *t.find(p + "q_proj.weight") = f32_tensor(p + "q_proj.weight", {12, 8}, 60);
      *t.find(p + "k_proj.weight") = f32_tensor(p + "k_proj.weight", {6, 8}, 61);
      *t.find(p + "v_proj.weight") = f32_tensor(p + "v_proj.weight", {6, 8}, 62);
      *t.find(p + "o_proj.weight") = f32_tensor(p + "o_proj.weight", {8, 12}, 63);
      t.tensors.push_back(f32_tensor(p + "q_norm.weight", {6}, 64));
      t.tensors.push_back(f32_tensor(p + "k_norm.weight", {6}, 65));
    }
    Checkpoint ck = load_checkpoint(write_model(t));
    EXPECT_TRUE(ck.config.qk_norm);
    EXPECT_EQ(ck.config.head_dim, 6);
    EXPECT_EQ(ck.config.q_width(), 12);
    EXPECT_EQ(ck.config.kv_width(), 6);
    t.drop("model.layers.1.self_attn.k_norm.weight");
    expect_error([&] { load_checkpoint(write_model(t)); }, "model.safetensors", "k_norm");
  }
}

TEST(Checkpoint, QuantizedFolderSkipsListedWeights) {
  Tiny t = tiny_llama();
  t.drop("model.layers.0.self_attn.q_proj.weight");
  t.drop("model.layers.1.mlp.down_proj.weight");
  t.tensors.push_back({"model.layers.0.self_attn.q_proj.codes", "U8", {4}, "abcd"});
  t.config["quantization_config"] = {
      {"quant_method", "lrquant"},
      {"layers", {{"model.layers.0.self_attn.q_proj", {{"format", "x"}}},
                  {"model.layers.1.mlp.down_proj", {{"format", "x"}}}}}};
  Checkpoint ck = load_checkpoint(write_model(t));
  EXPECT_EQ(ck.quantization.at("quant_method"), "lrquant");
  EXPECT_TRUE(ck.has("model.layers.0.self_attn.q_proj.codes"));
  // A layer that is not listed is still checked.
  t.drop("model.layers.1.mlp.up_proj.weight");
  expect_error([&] { load_checkpoint(write_model(t)); }, "model.safetensors", "model.layers.1.mlp.up_proj.weight");
  t.config["quantization_config"]["quant_method"] = "gptq";
  expect_error([&] { load_checkpoint(write_model(t)); }, "config.json",
               "quantization_config.quant_method 'gptq' is not supported");
}

TEST(Checkpoint, BrokenConfigsAreOneLineErrors) {
  auto check = [](const std::string& what, const std::function<void(json&)>& edit,
                  const std::string& keyword) {
    SCOPED_TRACE(what);
    json c = tiny_llama().config;
    edit(c);
    std::string dir = write_config(c);
    expect_error([&] { parse_hf_config(dir + "/config.json"); }, dir + "/config.json", keyword);
  };
  check("arch", [](json& c) { c["architectures"] = {"GPT2LMHeadModel"}; },
        "architectures[0] 'GPT2LMHeadModel' is not supported; supported: LlamaForCausalLM");
  check("arch type", [](json& c) { c["architectures"] = "LlamaForCausalLM"; }, "architectures");
  check("no arch", [](json& c) { c.erase("architectures"); c.erase("model_type"); }, "architectures");
  check("rope_scaling", [](json& c) { c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; },
        "rope_scaling.rope_type 'yarn' is not supported");
  check("rope_scaling legacy", [](json& c) { c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}}; },
        "rope_scaling.type 'linear'");
  check("rope_scaling string", [](json& c) { c["rope_scaling"] = "dynamic"; }, "rope_scaling");
  check("eps beyond float", [](json& c) { c["rms_norm_eps"] = 1e39; },
        "field 'rms_norm_eps' must be a positive float32, got 1e+39");
  check("eps below float", [](json& c) { c["rms_norm_eps"] = 1e-60; }, "positive float32");
  check("theta beyond float", [](json& c) { c["rope_theta"] = 1e300; },
        "rope_theta 1e+300 does not fit a float32");
  {
    // Written as text: dump() itself would recurse 60k levels deep.
    json c = tiny_llama().config;
    c["rope_scaling"] = "DEEP";
    std::string text = c.dump(2);
    text.replace(text.find("\"DEEP\""), 6, deep_array(60000));
    const std::string dir = test::temp_dir();
    spit(dir + "/config.json", text);
    expect_error([&] { parse_hf_config(dir + "/config.json"); }, dir + "/config.json",
                 "rope_scaling [[[[[[[[...]]]]]]]] is not supported");
  }
  check("rope_scaling factor", [](json& c) { c["rope_scaling"] = {{"factor", 2.0}}; }, "rope_scaling.factor");
  check("rope_parameters", [](json& c) { c["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 1.0}}; },
        "rope_parameters.rope_type 'llama3'");
  check("theta disagrees", [](json& c) { c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1.0}}; },
        "disagrees");
  check("act", [](json& c) { c["hidden_act"] = "gelu"; }, "hidden_act 'gelu' is not supported");
  check("attention_bias", [](json& c) { c["attention_bias"] = true; }, "attention_bias");
  check("mlp_bias", [](json& c) { c["mlp_bias"] = true; }, "mlp_bias");
  check("kv", [](json& c) { c["num_key_value_heads"] = 3; c["num_attention_heads"] = 4; },
        "not divisible by num_key_value_heads 3");
  check("hidden/heads", [](json& c) { c["num_attention_heads"] = 3; c["num_key_value_heads"] = 3; },
        "hidden_size 8 is not divisible by num_attention_heads 3");
  check("odd head_dim", [](json& c) { c["head_dim"] = 3; }, "head_dim 3 is odd");
  check("zero", [](json& c) { c["num_hidden_layers"] = 0; }, "num_hidden_layers' must be positive");
  check("negative", [](json& c) { c["vocab_size"] = -5; }, "vocab_size' must be positive");
  check("missing", [](json& c) { c.erase("hidden_size"); }, "missing field 'hidden_size'");
  check("type", [](json& c) { c["hidden_size"] = "512"; }, "field 'hidden_size' is a JSON string, expected an integer");
  check("float dim", [](json& c) { c["intermediate_size"] = 12.5; }, "intermediate_size");
  check("eps type", [](json& c) { c["rms_norm_eps"] = "1e-5"; }, "rms_norm_eps");
  check("eps zero", [](json& c) { c["rms_norm_eps"] = 0; }, "rms_norm_eps");
  check("tie type", [](json& c) { c["tie_word_embeddings"] = 1; }, "tie_word_embeddings");
  check("bos", [](json& c) { c["bos_token_id"] = 99; }, "outside the vocabulary");
  check("eos list type", [](json& c) { c["eos_token_id"] = {"</s>"}; }, "eos_token_id");
  check("dtype", [](json& c) { c["torch_dtype"] = "int8"; }, "torch_dtype 'int8' is not supported");
  check("quant type", [](json& c) { c["quantization_config"] = "lrquant"; }, "quantization_config");
  check("quant method", [](json& c) { c["quantization_config"] = {{"bits", 4}}; }, "quant_method");
  check("qwen window", [](json& c) { c["architectures"] = {"Qwen2ForCausalLM"}; c["layer_types"] = {"chunked"}; },
        "layer_types");
  check("not object", [](json& c) { c = json::array({1, 2}); }, "expected an object");

  std::string dir = test::temp_dir();
  spit(dir + "/config.json", "{\"hidden_size\": 8,\n \"vocab_size\": }");
  expect_error([&] { parse_hf_config(dir + "/config.json"); }, "config.json", "not valid JSON");
  expect_error([&] { load_checkpoint(dir); }, "config.json", "not valid JSON");
  spit(dir + "/config.json", tiny_llama().config.dump());
  spit(dir + "/tokenizer_config.json", "{\"add_bos_token\": tru");
  expect_error([&] { parse_hf_config(dir + "/config.json"); }, "tokenizer_config.json", "not valid JSON");
  spit(dir + "/tokenizer_config.json", "{\"add_bos_token\": \"yes\"}");
  expect_error([&] { parse_hf_config(dir + "/config.json"); }, "tokenizer_config.json", "add_bos_token");
}

TEST(Checkpoint, BrokenFoldersAreOneLineErrors) {
  std::string base = test::temp_dir();
  expect_error([&] { load_checkpoint(base + "/missing-model"); }, "missing-model", "no such file or directory");
  spit(base + "/weights.txt", "x");
  expect_error([&] { load_checkpoint(base + "/weights.txt"); }, "weights.txt", "not a checkpoint");
  expect_error([&] { load_checkpoint(base); }, base, "no config.json");
  {
    std::string dir = write_config(tiny_llama().config);
    expect_error([&] { load_checkpoint(dir); }, dir, "no model.safetensors or model.safetensors.index.json");
  }
  {
    Tiny t = tiny_llama();
    t.config["architectures"] = {"GPT2LMHeadModel"};
    expect_error([&] { load_checkpoint(write_model(t)); }, "config.json", "GPT2LMHeadModel");
  }
  {
    Tiny t = tiny_llama();
    t.config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
    expect_error([&] { load_checkpoint(write_model(t)); }, "config.json", "rope_scaling");
  }
  {  // a corrupt layer count is refused before ten million layers' tensors are listed
    Tiny t = tiny_llama();
    t.config["num_hidden_layers"] = 10000000;
    expect_error([&] { load_checkpoint(write_model(t)); }, "config.json",
                 "num_hidden_layers 10000000 is beyond any supported model (at most 1024)");
  }
  {  // config says 16 intermediate channels, tensors have 12
    Tiny t = tiny_llama();
    t.config["intermediate_size"] = 16;
    expect_error([&] { load_checkpoint(write_model(t)); }, "model.safetensors",
                 "tensor model.layers.0.mlp.gate_proj.weight has shape [12,8], config.json implies [16,8]");
  }
  {  // the same in a sharded folder: the message names the shard holding the tensor
    Tiny t = tiny_llama();
    *t.find("model.norm.weight") = f32_tensor("model.norm.weight", {9}, 3);
    expect_error([&] { load_checkpoint(write_model(t, 3)); }, "model-00003-of-00003.safetensors",
                 "model.norm.weight has shape [9]");
  }
  {
    Tiny t = tiny_llama();
    t.drop("model.layers.1.self_attn.v_proj.weight");
    expect_error([&] { load_checkpoint(write_model(t)); }, "model.safetensors",
                 "missing tensor model.layers.1.self_attn.v_proj.weight");
    expect_error([&] { load_checkpoint(write_model(t, 2)); }, "model.safetensors.index.json",
                 "missing tensor model.layers.1.self_attn.v_proj.weight");
  }
  {
    Tiny t = tiny_llama();
    t.drop("lm_head.weight");
    expect_error([&] { load_checkpoint(write_model(t)); }, "model.safetensors", "missing tensor lm_head.weight (required by config.json: tie_word_embeddings is false)");
  }
  {
    Tiny t = tiny_llama();
    t.find("model.norm.weight")->dtype = "I32";
    expect_error([&] { load_checkpoint(write_model(t)); }, "model.safetensors", "dtype I32");
  }
  {  // index naming a shard that is not there
    std::string dir = write_model(tiny_llama(), 3);
    fs::remove(dir + "/model-00002-of-00003.safetensors");
    expect_error([&] { load_checkpoint(dir); }, "model.safetensors.index.json",
                 "shard model-00002-of-00003.safetensors does not exist");
  }
  {  // index naming a tensor its shard lacks
    std::string dir = write_model(tiny_llama(), 2);
    json ix = json::parse(slurp(dir + "/model.safetensors.index.json"));
    ix["weight_map"]["model.layers.0.mlp.extra.weight"] = "model-00001-of-00002.safetensors";
    spit(dir + "/model.safetensors.index.json", ix.dump());
    expect_error([&] { load_checkpoint(dir); }, "model.safetensors.index.json",
                 "tensor model.layers.0.mlp.extra.weight is not in its shard model-00001-of-00002.safetensors");
    ix["weight_map"] = {{"a", "../model-00001-of-00002.safetensors"}};
    spit(dir + "/model.safetensors.index.json", ix.dump());
    expect_error([&] { load_checkpoint(dir); }, "model.safetensors.index.json", "not a file name inside the folder");
    ix.erase("weight_map");
    spit(dir + "/model.safetensors.index.json", ix.dump());
    expect_error([&] { load_checkpoint(dir); }, "model.safetensors.index.json", "weight_map");
    spit(dir + "/model.safetensors.index.json", "{\"weight_map\": {");
    expect_error([&] { load_checkpoint(dir); }, "model.safetensors.index.json", "not valid JSON");
  }
  {  // one tensor in two shards
    std::string dir = write_model(tiny_llama(), 2);
    Tiny t = tiny_llama();
    std::vector<RawTensor> second(t.tensors.begin() + t.tensors.size() / 2, t.tensors.end());
    second.push_back(*t.find("model.embed_tokens.weight"));
    spit(dir + "/model-00002-of-00002.safetensors", raw_safetensors(second));
    expect_error([&] { load_checkpoint(dir); }, "model-00002-of-00002.safetensors",
                 "tensor model.embed_tokens.weight is also in");
  }
  {  // a corrupt shard surfaces through the folder loader with the shard's name
    std::string dir = write_model(tiny_llama());
    std::string bytes = slurp(dir + "/model.safetensors");
    spit(dir + "/model.safetensors", bytes.substr(0, bytes.size() - 100));
    expect_error([&] { load_checkpoint(dir); }, "model.safetensors", "beyond the data buffer");
  }
}

// ------------------------------------------------------------------ llama2.c

namespace {

/// A llama2.c file with the given header and the right number of floats (value = index).
std::string llama2c_bytes(std::vector<int32_t> h, int64_t floats) {
  std::string out(reinterpret_cast<const char*>(h.data()), 28);
  std::vector<float> v(static_cast<size_t>(floats));
  for (int64_t i = 0; i < floats; ++i) v[size_t(i)] = float(i);
  return out + f32_bytes(v);
}

}  // namespace

// One non-finite weight would make every later activation NaN and the perplexity "nan" with
// exit 0; the loader names the file, the tensor and the element instead.
TEST(Checkpoint, NonFiniteWeightsAreNamed) {
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char* tensor;
    int64_t index;
    float value;
    const char* what;
  };
  for (const Case c : {Case{"model.layers.1.mlp.down_proj.weight", 29, std::nanf(""),
                            "holds NaN at element 29 (row 2, column 5)"},
                       Case{"model.layers.0.input_layernorm.weight", 3, -inf,
                            "holds -inf at element 3 (row 0, column 3)"},
                       Case{"model.embed_tokens.weight", 255, inf, "holds +inf at element 255"}}) {
    Tiny t = tiny_llama();
    RawTensor* r = t.find(c.tensor);
    std::memcpy(r->bytes.data() + 4 * c.index, &c.value, 4);
    expect_error([&] { load_checkpoint(write_model(t)); }, "model.safetensors",
                 std::string("tensor ") + c.tensor + " " + c.what);
  }
}

TEST(Llama2c, TinyFileWithSeparateClassifier) {
  // dim 8, hidden 12, 1 layer, 2 heads, 1 kv head (kv_dim 4), vocab -16 (own classifier), seq 4.
  const int64_t floats = 16 * 8 + 8 + 64 + 32 + 32 + 64 + 8 + 96 * 3 + 8 + 2 * 4 * 2 + 16 * 8;
  std::string dir = test::temp_dir();
  spit(dir + "/m.bin", llama2c_bytes({8, 12, 1, 2, 1, -16, 4}, floats));
  Checkpoint ck = load_checkpoint(dir + "/m.bin");
  EXPECT_FALSE(ck.config.tied_embeddings);
  EXPECT_EQ(ck.config.vocab, 16);
  EXPECT_EQ(ck.config.kv_width(), 4);
  EXPECT_EQ(ck.tokenizer_path, "");
  // Offsets (in floats) follow the README's order: emb, att norm, wq, wk, wv, wo, ffn norm, w1, w2, w3.
  EXPECT_EQ(ck.get("model.layers.0.self_attn.k_proj.weight").at<float>(0), float(128 + 8 + 64));
  EXPECT_EQ(ck.get("model.layers.0.mlp.gate_proj.weight").at<float>(0), float(128 + 8 + 64 + 32 + 32 + 64 + 8));
  EXPECT_EQ(ck.get("model.layers.0.mlp.down_proj.weight").at<float>(0), float(128 + 8 + 64 + 32 + 32 + 64 + 8 + 96));
  EXPECT_EQ(ck.get("model.norm.weight").at<float>(0), float(floats - 128 - 16 - 8));
  // The classifier comes after the two skipped rotary tables.
  EXPECT_EQ(ck.get("lm_head.weight").at<float>(0), float(floats - 128));
  EXPECT_EQ(ck.get("lm_head.weight").shape(), (Shape{16, 8}));
}

TEST(Llama2c, BrokenFilesAreOneLineErrors) {
  std::string dir = test::temp_dir();
  auto check = [&](const std::string& name, const std::string& bytes, const std::string& keyword) {
    SCOPED_TRACE(name);
    spit(dir + "/" + name, bytes);
    expect_error([&] { load_checkpoint(dir + "/" + name); }, name, keyword);
  };
  check("short.bin", "abc", "28-byte");
  check("zero.bin", llama2c_bytes({8, 12, 0, 2, 1, 16, 4}, 0), "n_layers is 0");
  check("heads.bin", llama2c_bytes({8, 12, 1, 3, 1, 16, 4}, 0), "not divisible by n_heads 3");
  check("kv.bin", llama2c_bytes({8, 12, 1, 4, 3, 16, 4}, 0), "not divisible by n_kv_heads 3");
  check("huge.bin", llama2c_bytes({1 << 30, 1 << 30, 1 << 30, 1, 1, 16, 4}, 0), "impossibly large");
  const int64_t floats = 16 * 8 + 8 + 64 + 32 + 32 + 64 + 8 + 96 * 3 + 8 + 2 * 4 * 2;
  check("long.bin", llama2c_bytes({8, 12, 1, 2, 1, 16, 4}, floats + 1), "implies");
  check("trunc.bin", llama2c_bytes({8, 12, 1, 2, 1, 16, 4}, floats - 1),
        "file is " + std::to_string(28 + 4 * (floats - 1)) + " bytes but");
}

// ------------------------------------------------------------------ shared models

TEST(SharedModels, LabM) {
  REQUIRE_SHARED();
  const std::string dir = test::shared("models/lab-m");
  Checkpoint ck = load_checkpoint(dir);
  const ModelConfig& c = ck.config;
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden, 512);
  EXPECT_EQ(c.n_layers, 6);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.intermediate, 1280);
  EXPECT_EQ(c.vocab, 4096);
  EXPECT_EQ(c.max_positions, 1024);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.dtype, DType::BF16);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.rms_eps, 1e-5f);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);
  EXPECT_TRUE(c.add_bos);
  EXPECT_FALSE(c.rope_interleaved);
  EXPECT_EQ(ck.tokenizer_path, dir + "/tokenizer.model");
  EXPECT_FALSE(ck.has("lm_head.weight"));

  // Against the index, read independently: every tensor from the shard it names, and the
  // parameter and byte totals its metadata states.
  json ix = json::parse(slurp(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(ck.tensors.size(), ix["weight_map"].size());
  EXPECT_EQ(ck.tensors.size(), size_t(2 + 6 * 9));
  int64_t params = 0;
  size_t bytes = 0;
  std::set<std::string> shards;
  for (auto& [name, t] : ck.tensors) {
    params += t.numel();
    bytes += t.nbytes();
    EXPECT_EQ(fs::path(ck.tensor_file.at(name)).filename(), ix["weight_map"][name].get<std::string>());
    shards.insert(ck.tensor_file.at(name));
  }
  EXPECT_EQ(shards.size(), 3u);
  EXPECT_EQ(params, ix["metadata"]["total_parameters"].get<int64_t>());
  EXPECT_EQ(bytes, ix["metadata"]["total_size"].get<size_t>());

  const std::string emb = "model.embed_tokens.weight";
  const Tensor& e = ck.get(emb);
  ASSERT_EQ(e.shape(), (Shape{4096, 512}));
  std::string ref = independent_tensor_bytes(dir + "/" + ix["weight_map"][emb].get<std::string>(), emb);
  EXPECT_EQ(tensor_bytes(e.row(0)), ref.substr(0, 512 * 2));
  EXPECT_EQ(tensor_bytes(e.row(4095)), ref.substr(4095 * 512 * 2));
  // The bytes are real bf16 weights, not zeros.
  float absmax = 0;
  for (int i = 0; i < 512; ++i) absmax = std::max(absmax, std::abs(bf16_to_f32(e.row(0).at<uint16_t>(i))));
  EXPECT_GT(absmax, 0.0f);
  EXPECT_LT(absmax, 100.0f);
  EXPECT_EQ(ck.get("model.layers.5.mlp.down_proj.weight").shape(), (Shape{512, 1280}));
}

TEST(SharedModels, LabS) {
  REQUIRE_SHARED();
  const std::string dir = test::shared("models/lab-s");
  Checkpoint ck = load_checkpoint(dir);
  const ModelConfig& c = ck.config;
  EXPECT_EQ(c.hidden, 256);
  EXPECT_EQ(c.n_layers, 4);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.intermediate, 640);
  EXPECT_EQ(c.vocab, 4096);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.dtype, DType::BF16);
  EXPECT_EQ(ck.tensors.size(), size_t(2 + 4 * 9));
  std::set<std::string> files;
  for (auto& [name, f] : ck.tensor_file) files.insert(f);
  EXPECT_EQ(files, std::set<std::string>{dir + "/model.safetensors"});
  EXPECT_EQ(SafetensorsFile::open(dir + "/model.safetensors").metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}}));
  for (const std::string name : {"model.embed_tokens.weight", "model.layers.3.self_attn.k_proj.weight",
                                 "model.norm.weight"})
    EXPECT_EQ(tensor_bytes(ck.get(name)), independent_tensor_bytes(dir + "/model.safetensors", name)) << name;
}

TEST(SharedModels, Stories260K) {
  REQUIRE_SHARED();
  const std::string path = test::shared("models/stories260K/stories260K.bin");
  ASSERT_EQ(fs::file_size(path), 1056540u);  // README
  Checkpoint ck = load_checkpoint(path);
  const ModelConfig& c = ck.config;
  EXPECT_EQ(c.model_type, "llama2c");
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.intermediate, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab, 512);
  EXPECT_EQ(c.max_positions, 512);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_TRUE(c.rope_interleaved);
  EXPECT_EQ(c.rms_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.dtype, DType::F32);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);
  EXPECT_EQ(ck.tokenizer_path, test::shared("models/stories260K/tok512.bin"));
  EXPECT_FALSE(ck.has("lm_head.weight"));
  EXPECT_EQ(ck.tensors.size(), size_t(2 + 5 * 9));

  // Independent reads at offsets computed from the README's layout (in floats after the header).
  std::ifstream f(path, std::ios::binary);
  auto read_at = [&](int64_t float_offset, int n) {
    std::vector<float> v(static_cast<size_t>(n));
    f.seekg(28 + 4 * float_offset);
    f.read(reinterpret_cast<char*>(v.data()), 4 * n);
    EXPECT_TRUE(f.good());
    return v;
  };
  auto first = [](const Tensor& t, int n) { return std::vector<float>(t.data<float>(), t.data<float>() + n); };
  const int64_t emb = 512 * 64, att = 5 * 64, wq = 5 * 64 * 64, wk = 5 * 32 * 64, ffn = 5 * 172 * 64;
  EXPECT_EQ(first(ck.get("model.embed_tokens.weight"), 16), read_at(0, 16));
  EXPECT_EQ(first(ck.get("model.layers.2.input_layernorm.weight"), 8), read_at(emb + 2 * 64, 8));
  EXPECT_EQ(first(ck.get("model.layers.1.self_attn.k_proj.weight"), 8), read_at(emb + att + wq + 32 * 64, 8));
  EXPECT_EQ(first(ck.get("model.layers.4.mlp.up_proj.weight"), 8),
            read_at(emb + att + wq + 2 * wk + wq + att + 2 * ffn + 4 * 172 * 64, 8));
  EXPECT_EQ(first(ck.get("model.norm.weight"), 64), read_at(emb + 2 * att + 2 * wq + 2 * wk + 3 * ffn, 64));
  // RMSNorm gains of a trained model are positive and O(1); a misplaced offset would not give that.
  for (float g : first(ck.get("model.norm.weight"), 64)) {
    EXPECT_GT(g, 0.05f);
    EXPECT_LT(g, 20.0f);
  }

  std::string dir = test::temp_dir();
  std::string bytes = slurp(path);
  spit(dir + "/stories_trunc.bin", bytes.substr(0, bytes.size() - 4));
  expect_error([&] { load_checkpoint(dir + "/stories_trunc.bin"); }, "stories_trunc.bin",
               "file is 1056536 bytes but its llama2.c header");
  expect_error([&] { load_checkpoint(dir + "/stories_trunc.bin"); }, "stories_trunc.bin", "implies 1056540 bytes");
}
