// The llama architecture in GGUF: names, RoPE order, metadata, and a GGUF file as a Checkpoint.
#include "io/gguf_llama.h"

#include <charconv>
#include <cmath>
#include <limits>

#include "io/checkpoint.h"
#include "io/json_util.h"

namespace lrq::gguf {

using io::printable;

namespace {

// Per-block tensors: (Hugging Face suffix after "model.layers.N.", GGUF suffix after "blk.N.").
constexpr std::pair<std::string_view, std::string_view> kBlockNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
constexpr std::pair<std::string_view, std::string_view> kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

// "<prefix><N>.<rest>" -> N and rest; false when `s` does not have that form.
bool split_layer(std::string_view s, std::string_view prefix, int64_t* n, std::string_view* rest) {
  if (!s.starts_with(prefix)) return false;
  s.remove_prefix(prefix.size());
  const size_t dot = s.find('.');
  if (dot == 0 || dot == std::string_view::npos) return false;
  const std::string_view num = s.substr(0, dot);
  if (num.size() > 1 && num[0] == '0') return false;  // one spelling per index
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), *n);
  if (ec != std::errc() || p != num.data() + num.size() || *n < 0) return false;
  *rest = s.substr(dot + 1);
  return true;
}

}  // namespace

std::string llama_name(std::string_view hf) {
  for (auto [h, g] : kGlobalNames)
    if (hf == h) return std::string(g);
  int64_t n;
  std::string_view rest;
  if (split_layer(hf, "model.layers.", &n, &rest))
    for (auto [h, g] : kBlockNames)
      if (rest == h) return "blk." + std::to_string(n) + "." + std::string(g);
  return "";
}

std::string hf_name(std::string_view gguf) {
  for (auto [h, g] : kGlobalNames)
    if (gguf == g) return std::string(h);
  int64_t n;
  std::string_view rest;
  if (split_layer(gguf, "blk.", &n, &rest))
    for (auto [h, g] : kBlockNames)
      if (rest == g) return "model.layers." + std::to_string(n) + "." + std::string(h);
  return "";
}

bool rope_permuted(std::string_view hf) {
  return hf.ends_with(".self_attn.q_proj.weight") || hf.ends_with(".self_attn.k_proj.weight");
}

int64_t rope_hf_row(int64_t r, int64_t head_dim) {
  const int64_t head = r / head_dim, k = r % head_dim, i = k / 2, j = k % 2;
  return head * head_dim + j * (head_dim / 2) + i;
}

int64_t rope_gguf_row(int64_t r, int64_t head_dim) {
  const int64_t head = r / head_dim, k = r % head_dim, half = head_dim / 2;
  const int64_t j = k / half, i = k % half;
  return head * head_dim + 2 * i + j;
}

void set_llama_metadata(Writer& w, const ModelConfig& c, SpmVocab v, const std::string& name) {
  auto u32 = [](int64_t x) { return Value::u32(uint32_t(x)); };
  w.set("general.architecture", Value::string("llama"));
  w.set("general.name", Value::string(name));
  w.set("llama.context_length", u32(c.max_positions));
  w.set("llama.embedding_length", u32(c.hidden));
  w.set("llama.block_count", u32(c.n_layers));
  w.set("llama.feed_forward_length", u32(c.intermediate));
  w.set("llama.attention.head_count", u32(c.n_heads));
  w.set("llama.attention.head_count_kv", u32(c.n_kv_heads));
  w.set("llama.attention.key_length", u32(c.head_dim));
  w.set("llama.attention.value_length", u32(c.head_dim));
  w.set("llama.rope.dimension_count", u32(c.head_dim));
  w.set("llama.rope.freq_base", Value::f32(c.rope_theta));
  w.set("llama.attention.layer_norm_rms_epsilon", Value::f32(c.rms_eps));
  w.set("llama.vocab_size", u32(c.vocab));
  // llama.cpp sizes the vocabulary by the token list and checks token_embd against it, so an
  // embedding padded past the tokenizer gets placeholder pieces that no text encodes to.
  for (int64_t i = int64_t(v.tokens.size()); i < c.vocab; ++i) {
    v.tokens.push_back("[PAD" + std::to_string(i) + "]");
    v.scores.push_back(0.f);
    v.types.push_back(5);
  }
  w.set("tokenizer.ggml.model", Value::string("llama"));
  w.set("tokenizer.ggml.pre", Value::string("default"));
  w.set("tokenizer.ggml.tokens", Value::strings(std::move(v.tokens)));
  w.set("tokenizer.ggml.scores", Value::f32s(v.scores));
  w.set("tokenizer.ggml.token_type", Value::i32s(v.types));
  if (v.bos >= 0) w.set("tokenizer.ggml.bos_token_id", u32(v.bos));
  if (v.eos >= 0) w.set("tokenizer.ggml.eos_token_id", u32(v.eos));
  if (v.unk >= 0) w.set("tokenizer.ggml.unknown_token_id", u32(v.unk));
  w.set("tokenizer.ggml.add_bos_token", Value::boolean(v.add_bos));
  w.set("tokenizer.ggml.add_eos_token", Value::boolean(v.add_eos));
  w.set("tokenizer.ggml.add_space_prefix", Value::boolean(v.add_space_prefix));
  w.set("tokenizer.ggml.remove_extra_whitespaces", Value::boolean(v.remove_extra_whitespaces));
}

SpmVocab read_spm_vocab(const File& f) {
  const std::string& path = f.path();
  auto model = f.opt_string("tokenizer.ggml.model");
  if (!model)
    fail(path, "no tokenizer in the file (tokenizer.ggml.model is missing); pass --tokenizer");
  if (*model != "llama")
    fail(path,
         "tokenizer.ggml.model '{}' is not supported (only \"llama\", a SentencePiece "
         "tokenizer)",
         printable(*model));
  SpmVocab v;
  const Value* tokens = f.find("tokenizer.ggml.tokens");
  if (!tokens) fail(path, "missing metadata tokenizer.ggml.tokens");
  if (!tokens->is_array() || tokens->elem() != ValueType::String)
    fail(path, "metadata tokenizer.ggml.tokens is {}, expected an array of strings",
         tokens->describe());
  v.tokens = tokens->string_array();
  const uint64_t n = v.tokens.size();
  if (n == 0 || n > uint64_t(std::numeric_limits<int32_t>::max()))
    fail(path, "tokenizer.ggml.tokens has {} entries", n);
  auto numeric_array = [&](const char* key, bool integer) -> const Value* {
    const Value* a = f.find(key);
    if (!a) return nullptr;
    const ValueType e = a->elem();
    const bool ok = a->is_array() && e != ValueType::String && e != ValueType::Bool &&
                    (!integer || (e != ValueType::F32 && e != ValueType::F64));
    if (!ok)
      fail(path, "metadata {} is {}, expected an array of {}", key, a->describe(),
           integer ? "integers" : "numbers");
    if (a->count() != n)
      fail(path, "metadata {} has {} entries but tokenizer.ggml.tokens has {}", key, a->count(), n);
    return a;
  };
  const Value* scores = numeric_array("tokenizer.ggml.scores", false);
  const Value* types = numeric_array("tokenizer.ggml.token_type", true);
  v.scores.resize(n, 0.f);
  v.types.resize(n, 1);
  for (uint64_t i = 0; i < n; ++i) {
    if (scores) {
      const double s = scores->number_at(i);
      if (!std::isfinite(s) || std::fabs(s) > double(std::numeric_limits<float>::max()))
        fail(path, "tokenizer.ggml.scores[{}] = {} is not a finite float", i, s);
      v.scores[i] = float(s);
    }
    if (types) {
      const int64_t t = types->int_at(i);
      if (t < 1 || t > 6)
        fail(path, "tokenizer.ggml.token_type[{}] = {} is not a SentencePiece piece type (1-6)", i,
             t);
      v.types[i] = int32_t(t);
    }
  }
  auto id = [&](const char* key) -> int32_t {
    auto x = f.opt_int(key);
    if (!x) return -1;
    if (*x < 0 || uint64_t(*x) >= n)
      fail(path, "metadata {} = {} is outside the {} tokens", key, *x, n);
    return int32_t(*x);
  };
  v.bos = id("tokenizer.ggml.bos_token_id");
  v.eos = id("tokenizer.ggml.eos_token_id");
  v.unk = id("tokenizer.ggml.unknown_token_id");
  // Defaults are llama.cpp's for a SentencePiece vocabulary.
  v.add_bos = f.opt_bool("tokenizer.ggml.add_bos_token").value_or(true);
  v.add_eos = f.opt_bool("tokenizer.ggml.add_eos_token").value_or(false);
  v.add_space_prefix = f.opt_bool("tokenizer.ggml.add_space_prefix").value_or(true);
  v.remove_extra_whitespaces =
      f.opt_bool("tokenizer.ggml.remove_extra_whitespaces").value_or(false);
  return v;
}

}  // namespace lrq::gguf

namespace lrq {

using io::printable;

namespace {

constexpr int64_t kMaxDim = int64_t(1) << 31;  // as hf_config.cpp: products of a few fit int64
constexpr int64_t kMaxLayers = 1024;

}  // namespace

Checkpoint load_gguf(const std::string& path) {
  const gguf::File f = gguf::File::open(path);
  const std::string arch = f.req_string("general.architecture");
  if (f.opt_string("general.type").value_or("model") != "model")
    fail(path, "general.type is '{}': not a model (a LoRA adapter is applied to a model, not run)",
         printable(*f.opt_string("general.type")));
  if (arch != "llama")
    fail(path, "general.architecture '{}' is not supported (only llama)", printable(arch));

  auto dim = [&](const std::string& key, std::optional<int64_t> dflt) {
    auto v = f.opt_int(key);
    if (!v && !dflt) fail(path, "missing metadata {}", key);
    const int64_t x = v ? *v : *dflt;
    if (x <= 0 || x > kMaxDim) fail(path, "metadata {} = {} is out of range", key, x);
    return x;
  };
  Checkpoint ck;
  ck.path = path;
  ModelConfig& c = ck.config;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.hidden = dim("llama.embedding_length", std::nullopt);
  c.intermediate = dim("llama.feed_forward_length", std::nullopt);
  c.n_layers = dim("llama.block_count", std::nullopt);
  if (c.n_layers > kMaxLayers)
    fail(path, "llama.block_count {} is beyond any supported model (at most {})", c.n_layers,
         kMaxLayers);
  c.n_heads = dim("llama.attention.head_count", std::nullopt);
  c.n_kv_heads = dim("llama.attention.head_count_kv", c.n_heads);
  if (!f.opt_int("llama.attention.key_length") && c.hidden % c.n_heads != 0)
    fail(path, "llama.embedding_length {} is not divisible by llama.attention.head_count {}",
         c.hidden, c.n_heads);
  c.head_dim = dim("llama.attention.key_length", c.hidden / c.n_heads);
  if (dim("llama.attention.value_length", c.head_dim) != c.head_dim)
    fail(path, "llama.attention.value_length differs from key_length {}: not supported",
         c.head_dim);
  if (dim("llama.rope.dimension_count", c.head_dim) != c.head_dim)
    fail(path,
         "llama.rope.dimension_count {} differs from the head size {}: partial rotary "
         "embeddings are not supported",
         *f.opt_int("llama.rope.dimension_count"), c.head_dim);
  if (c.n_heads % c.n_kv_heads != 0)
    fail(path, "llama.attention.head_count {} is not divisible by head_count_kv {}", c.n_heads,
         c.n_kv_heads);
  if (c.head_dim % 2 != 0)
    fail(path, "head size {} is odd; rotary embeddings need it even", c.head_dim);
  if (f.opt_int("llama.expert_count").value_or(0) > 0)
    fail(path, "llama.expert_count {}: mixture-of-experts models are not supported",
         *f.opt_int("llama.expert_count"));
  if (auto s = f.opt_string("llama.rope.scaling.type"); s && *s != "none")
    fail(path, "llama.rope.scaling.type '{}' is not supported (only plain rotary embeddings)",
         printable(*s));
  c.max_positions = dim("llama.context_length", 2048);
  const double eps = f.opt_number("llama.attention.layer_norm_rms_epsilon").value_or(-1);
  if (!(eps > 0 && eps <= double(std::numeric_limits<float>::max()) && float(eps) > 0))
    fail(path, "llama.attention.layer_norm_rms_epsilon must be a positive float, got {}",
         f.find("llama.attention.layer_norm_rms_epsilon") ? std::to_string(eps) : "nothing");
  c.rms_eps = float(eps);
  const double theta = f.opt_number("llama.rope.freq_base").value_or(10000.0);
  if (!(theta > 0 && theta <= double(std::numeric_limits<float>::max())))
    fail(path, "llama.rope.freq_base must be a positive float, got {}", theta);
  c.rope_theta = float(theta);

  const gguf::TensorInfo* embd = f.tensor("token_embd.weight");
  if (!embd) fail(path, "missing tensor token_embd.weight");
  if (embd->ne.size() != 2)
    fail(path, "tensor token_embd.weight has {} dimensions, expected 2", embd->ne.size());
  c.vocab = embd->ne[1];
  if (c.vocab <= 0 || c.vocab > kMaxDim) fail(path, "token_embd.weight has {} rows", c.vocab);
  if (auto nv = f.opt_int("llama.vocab_size"); nv && *nv != c.vocab)
    fail(path, "llama.vocab_size {} differs from token_embd.weight's {} rows", *nv, c.vocab);
  c.tied_embeddings = f.tensor("output.weight") == nullptr;

  auto token_id = [&](const char* key) -> int32_t {
    auto v = f.opt_int(key);
    if (!v) return -1;
    if (*v < 0 || *v >= c.vocab)
      fail(path, "metadata {} = {} is outside the vocabulary of {}", key, *v, c.vocab);
    return int32_t(*v);
  };
  c.bos_id = token_id("tokenizer.ggml.bos_token_id");
  c.eos_id = token_id("tokenizer.ggml.eos_token_id");
  c.add_bos = c.bos_id >= 0 && f.opt_bool("tokenizer.ggml.add_bos_token").value_or(true);

  // Every tensor the graph reads, checked in GGUF's own terms (names, ne order) before any is
  // decoded; checkpoint validation then only has the values left to check.
  {
    const int64_t h = c.hidden, q = c.q_width(), kv = c.kv_width(), ff = c.intermediate;
    std::vector<std::pair<std::string, std::vector<int64_t>>> want = {
        {"token_embd.weight", {h, c.vocab}}, {"output_norm.weight", {h}}};
    if (!c.tied_embeddings) want.push_back({"output.weight", {h, c.vocab}});
    const std::pair<const char*, std::vector<int64_t>> per_block[] = {
        {"attn_norm", {h}},    {"attn_q", {h, q}},      {"attn_k", {h, kv}},
        {"attn_v", {h, kv}},   {"attn_output", {q, h}}, {"ffn_norm", {h}},
        {"ffn_gate", {h, ff}}, {"ffn_up", {h, ff}},     {"ffn_down", {ff, h}}};
    for (int64_t i = 0; i < c.n_layers; ++i)
      for (const auto& [n, ne] : per_block)
        want.push_back({"blk." + std::to_string(i) + "." + n + ".weight", ne});
    auto ne_str = [](const std::vector<int64_t>& ne) {
      return shape_str(Shape(ne.begin(), ne.end()));
    };
    for (const auto& [name, ne] : want) {
      const gguf::TensorInfo* t = f.tensor(name);
      if (!t) fail(path, "missing tensor {} (the llama.* metadata implies it)", name);
      if (t->ne != ne)
        fail(path, "tensor {} has ne {}, the llama.* metadata implies {}", name, ne_str(t->ne),
             ne_str(ne));
    }
  }

  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string hf = gguf::hf_name(t.name);
    if (hf.empty())
      fail(path, "tensor '{}' is not part of the llama graph lrquant runs", printable(t.name));
    Tensor w;
    if (gguf::rope_permuted(hf)) {
      if (t.ne.size() != 2 || t.ne[1] % c.head_dim != 0)
        fail(path, "tensor {} has dimensions {}, not whole heads of {} rows", t.name,
             shape_str(Shape(t.ne.begin(), t.ne.end())), c.head_dim);
      const int64_t hd = c.head_dim;
      w = f.load_rows(t, [hd](int64_t r) { return gguf::rope_gguf_row(r, hd); });
    } else {
      w = f.load(t);
    }
    ck.tensors.emplace(hf, std::move(w));
    ck.tensor_file.emplace(hf, path);
    ck.stored_type.emplace(hf, std::string(gguf::type_name(t.type)));
  }
  if (!ck.tensors.count("model.embed_tokens.weight"))
    fail(path, "missing tensor token_embd.weight");
  ck.config.dtype = ck.tensors.at("model.embed_tokens.weight").dtype();
  // The vocabulary lives in the file itself; load_tokenizer reads it from there.
  ck.tokenizer_path = path;
  return ck;
}

}  // namespace lrq
