#include "io/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "io/gguf.h"
#include "io/json_util.h"

namespace lrq {

namespace fs = std::filesystem;
using io::printable;

const Tensor& Checkpoint::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) fail(path, "missing tensor {}", printable(name));
  return it->second;
}

namespace {

struct Expected {
  std::string name;
  Shape shape;
  bool required = true;
  std::string_view why = "required by config.json";
};

// Every tensor the forward pass of `c` reads, Hugging Face names and [out, in] layouts.
std::vector<Expected> expected_tensors(const ModelConfig& c) {
  const int64_t h = c.hidden, q = c.q_width(), kv = c.kv_width(), f = c.intermediate;
  std::vector<Expected> out = {{"model.embed_tokens.weight", {c.vocab, h}}};
  for (int64_t i = 0; i < c.n_layers; ++i) {
    std::string l = "model.layers." + std::to_string(i) + ".";
    out.push_back({l + "input_layernorm.weight", {h}});
    out.push_back({l + "self_attn.q_proj.weight", {q, h}});
    out.push_back({l + "self_attn.k_proj.weight", {kv, h}});
    out.push_back({l + "self_attn.v_proj.weight", {kv, h}});
    out.push_back({l + "self_attn.o_proj.weight", {h, q}});
    if (c.qkv_bias) {
      out.push_back({l + "self_attn.q_proj.bias", {q}});
      out.push_back({l + "self_attn.k_proj.bias", {kv}});
      out.push_back({l + "self_attn.v_proj.bias", {kv}});
    }
    if (c.qk_norm) {
      out.push_back({l + "self_attn.q_norm.weight", {c.head_dim}});
      out.push_back({l + "self_attn.k_norm.weight", {c.head_dim}});
    }
    out.push_back({l + "post_attention_layernorm.weight", {h}});
    out.push_back({l + "mlp.gate_proj.weight", {f, h}});
    out.push_back({l + "mlp.up_proj.weight", {f, h}});
    out.push_back({l + "mlp.down_proj.weight", {h, f}});
  }
  out.push_back({"model.norm.weight", {h}});
  // A tied checkpoint may still carry a copy of the head; if so it must fit.
  out.push_back({"lm_head.weight", {c.vocab, h}, !c.tied_embeddings,
                 "required by config.json: tie_word_embeddings is false"});
  return out;
}

// `listing` is the file that would have to name a missing tensor; `skip` the weights a
// quantized folder stores in another form.
// Index of the first inf or NaN of a float tensor (F32, F16, BF16: the exponent all ones), or
// -1. Every loaded weight is scanned once: one NaN would otherwise turn every later activation
// into NaN and the perplexity into "nan" with exit 0, naming nothing. Chunks in parallel, the
// smallest index wins.
int64_t first_nonfinite_value(const Tensor& t) {
  const int64_t n = t.numel();
  const int width = t.dtype() == DType::F32 ? 4 : 2;
  const uint32_t mask = t.dtype() == DType::F32 ? 0x7f800000u : t.dtype() == DType::F16 ? 0x7c00u : 0x7f80u;
  const uint8_t* p = static_cast<const uint8_t*>(t.raw());
  constexpr int64_t kChunk = int64_t(1) << 20;
  const int64_t nchunks = (n + kChunk - 1) / kChunk;
  int64_t first = -1;
#pragma omp parallel for schedule(static) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
    int64_t found = -1;
    if (width == 4) {
      for (int64_t i = lo; i < hi && found < 0; ++i) {
        uint32_t v;
        std::memcpy(&v, p + 4 * i, 4);
        if ((v & mask) == mask) found = i;
      }
    } else {
      for (int64_t i = lo; i < hi && found < 0; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        if ((v & mask) == mask) found = i;
      }
    }
    if (found >= 0) {
#pragma omp critical(lrq_first_nonfinite)
      if (first < 0 || found < first) first = found;
    }
  }
  return first;
}

// "NaN", "+inf" or "-inf" for the non-finite element i, from its bits.
std::string value_str(const Tensor& t, int64_t i) {
  const uint8_t* p = static_cast<const uint8_t*>(t.raw());
  uint32_t v = 0, mant = 0, sign = 0;
  if (t.dtype() == DType::F32) {
    std::memcpy(&v, p + 4 * i, 4);
    mant = v & 0x007fffffu;
    sign = v >> 31;
  } else {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    mant = h & (t.dtype() == DType::F16 ? 0x03ffu : 0x007fu);
    sign = h >> 15;
  }
  return mant ? "NaN" : sign ? "-inf" : "+inf";
}

void validate(const Checkpoint& ck, const std::string& listing, const std::set<std::string>& skip) {
  for (const Expected& e : expected_tensors(ck.config)) {
    if (skip.count(e.name)) continue;
    auto it = ck.tensors.find(e.name);
    if (it == ck.tensors.end()) {
      if (!e.required) continue;
      fail(listing, "missing tensor {} ({})", e.name, e.why);
    }
    const Tensor& t = it->second;
    const std::string& file = ck.tensor_file.at(e.name);
    if (t.shape() != e.shape)
      fail(file, "tensor {} has shape {}, config.json implies {}", e.name, shape_str(t.shape()),
           shape_str(e.shape));
    if (t.dtype() != DType::F32 && t.dtype() != DType::F16 && t.dtype() != DType::BF16)
      fail(file, "tensor {} has dtype {}, expected a float type (F32, F16 or BF16)", e.name,
           dtype_name(t.dtype()));
    if (const int64_t bad = first_nonfinite_value(t); bad >= 0) {
      const int64_t cols = t.ndim() == 2 ? t.dim(1) : t.numel();
      fail(file, "tensor {} holds {} at element {} (row {}, column {}): a weight must be finite",
           e.name, value_str(t, bad), bad, bad / std::max<int64_t>(cols, 1),
           bad % std::max<int64_t>(cols, 1));
    }
  }
}

std::set<std::string> quantized_weights(const nlohmann::json& q, const std::string& config) {
  std::set<std::string> out;
  if (q.is_null()) return out;
  auto it = q.find("layers");
  if (it == q.end()) return out;
  if (!it->is_object())
    fail(config, "quantization_config.layers is a JSON {}, expected an object keyed by layer name",
         io::json_type(*it));
  for (auto& [layer, v] : it->items()) out.insert(layer + ".weight");
  return out;
}

Checkpoint load_hf_folder(const std::string& dir) {
  Checkpoint ck;
  ck.path = dir;
  const fs::path d(dir);
  const std::string config = (d / "config.json").string();
  std::error_code ec;
  if (!fs::exists(config, ec)) fail(dir, "no config.json in the folder");
  ck.config = parse_hf_config(config, &ck.quantization);
  TensorStore store = TensorStore::open_dir(dir);
  for (const std::string& name : store.names()) {
    ck.tensors.emplace(name, store.get(name));
    ck.tensor_file.emplace(name, store.file_of(name));
  }
  validate(ck, store.source(), quantized_weights(ck.quantization, config));
  ck.config.dtype = ck.tensors.at("model.embed_tokens.weight").dtype();
  if (fs::exists(d / "tokenizer.model", ec)) ck.tokenizer_path = (d / "tokenizer.model").string();
  return ck;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) fail(path, "no such file or directory");
  if (ec) fail(path, "cannot access: {}", ec.message());
  if (fs::is_directory(st)) return load_hf_folder(path);
  // A .gguf file is read as GGUF whatever it holds, so a damaged one gets the GGUF reader's
  // message; any other name is sniffed by its magic.
  if (fs::is_regular_file(st) &&
      (fs::path(path).extension() == ".gguf" || gguf::is_gguf_file(path))) {
    Checkpoint ck = load_gguf(path);
    validate(ck, path, {});
    return ck;
  }
  if (fs::is_regular_file(st) && fs::path(path).extension() == ".bin") {
    Checkpoint ck = load_llama2c(path);
    validate(ck, path, {});
    return ck;
  }
  fail(path, "not a checkpoint: expected a model folder (config.json + safetensors), a .gguf "
             "file or a llama2.c .bin file");
}

}  // namespace lrq
