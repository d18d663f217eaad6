// Hugging Face config.json -> ModelConfig, refusing every feature the forward pass does not
// implement (a silently ignored rope_scaling or bias would give a subtly wrong model).
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>

#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/mapped_file.h"

namespace lrq {

namespace fs = std::filesystem;
using nlohmann::json;
using io::json_type;
using io::printable;

namespace {

constexpr int64_t kMaxLayers = 1024;

// Defaults are those of the transformers config classes, used when config.json omits a field.
struct Arch {
  std::string_view name, model_type;
  int64_t max_positions;
  int32_t bos, eos;
  bool qkv_bias, qk_norm;
  std::optional<int64_t> head_dim;  // Qwen3Config defaults to 128, the others to hidden/heads
};
constexpr Arch kArchs[] = {
    {"LlamaForCausalLM", "llama", 2048, 1, 2, false, false, std::nullopt},
    {"MistralForCausalLM", "mistral", 4096 * 32, 1, 2, false, false, std::nullopt},
    {"Qwen2ForCausalLM", "qwen2", 32768, -1, -1, true, false, std::nullopt},
    {"Qwen3ForCausalLM", "qwen3", 32768, -1, -1, false, true, 128},
};
constexpr std::string_view kSupported =
    "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM";

// Bounds every dimension so products of a few of them cannot overflow int64.
constexpr int64_t kMaxDim = int64_t(1) << 31;

// Typed access to the fields of one JSON object, every failure an Error naming file and field.
// A null field counts as absent: transformers writes null for "use the default".
class Fields {
 public:
  Fields(const std::string& file, const json& j, std::string prefix = "")
      : file_(file), j_(j), prefix_(std::move(prefix)) {}

  const json* find(std::string_view key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void type_error(std::string_view key, const json& v, std::string_view want) const {
    fail(file_, "field '{}{}' is a JSON {}, expected {}", prefix_, key, json_type(v), want);
  }
  std::string name(std::string_view key) const { return prefix_ + std::string(key); }

  std::optional<int64_t> opt_int(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer()) type_error(key, *v, "an integer");
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(kMaxDim))
      fail(file_, "field '{}' is absurdly large ({})", name(key), v->get<uint64_t>());
    return v->get<int64_t>();
  }
  int64_t req_int(std::string_view key) const {
    auto v = opt_int(key);
    if (!v) fail(file_, "missing field '{}'", name(key));
    return *v;
  }
  /// A required dimension: present, integer, positive.
  int64_t dim(std::string_view key, std::optional<int64_t> dflt = std::nullopt) const {
    auto v = opt_int(key);
    if (!v && !dflt) fail(file_, "missing field '{}'", name(key));
    int64_t x = v ? *v : *dflt;
    if (x <= 0) fail(file_, "field '{}' must be positive, got {}", name(key), x);
    return x;
  }
  std::optional<double> opt_number(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) type_error(key, *v, "a number");
    return v->get<double>();
  }
  std::optional<bool> opt_bool(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) type_error(key, *v, "true or false");
    return v->get<bool>();
  }
  std::optional<std::string> opt_string(std::string_view key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) type_error(key, *v, "a string");
    return v->get<std::string>();
  }
  /// A token id field: an integer, null (none: -1), or a list whose first entry is taken
  /// (generation may stop at any of them; one id is what the model config carries).
  int32_t token_id(std::string_view key, int32_t dflt, int64_t vocab) const {
    auto it = j_.find(key);
    if (it == j_.end()) return dflt;
    const json* v = &*it;
    if (v->is_array()) {
      if (v->empty()) return -1;
      v = &(*v)[0];
    }
    if (v->is_null()) return -1;
    if (!v->is_number_integer()) type_error(key, *v, "an integer, a list of integers or null");
    int64_t id = v->get<int64_t>();
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(vocab)) id = vocab;
    if (id < 0 || id >= vocab)
      fail(file_, "field '{}' is {}, outside the vocabulary of {} tokens", name(key), id, vocab);
    return int32_t(id);
  }

 private:
  const std::string& file_;
  const json& j_;
  std::string prefix_;
};

// A config number as the float the model uses. Converting a double beyond FLT_MAX is undefined
// behaviour (the compiler may then assume the result finite), so the range is checked first.
float checked_float(const std::string& file, double v, const std::string& field) {
  if (!(std::fabs(v) <= double(std::numeric_limits<float>::max())))
    fail(file, "{} {} does not fit a float32", field, v);
  return float(v);
}

// rope_scaling (transformers 4) and rope_parameters (transformers 5) both describe the rotary
// variant; only the plain one with no extra knobs is implemented.
void check_rope(const std::string& file, const json& j, std::string_view field,
                float* theta) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return;
  if (!it->is_object())
    fail(file, "{} {} is not supported (only null)", field, io::preview(*it));
  Fields f(file, *it, std::string(field) + ".");
  // The variant's name first: "rope_type 'yarn'" says more than its first unknown knob.
  for (const char* key : {"rope_type", "type"}) {
    auto t = f.opt_string(key);
    if (t && *t != "default")
      fail(file, "{}.{} '{}' is not supported (only default rotary embeddings)", field, key,
           printable(*t));
  }
  for (auto& [key, v] : it->items()) {
    if (key == "rope_type" || key == "type") continue;
    if (key == "rope_theta") {
      if (auto t = f.opt_number(key)) *theta = checked_float(file, *t, std::string(field) + ".rope_theta");
    } else if (key == "partial_rotary_factor") {
      auto p = f.opt_number(key);
      if (p && *p != 1.0)
        fail(file, "{}.partial_rotary_factor {} is not supported (only 1)", field, *p);
    } else {
      fail(file, "{}.{} is not supported (rope scaling variants are not implemented)", field,
           printable(key));
    }
  }
}

DType parse_dtype(const std::string& file, const Fields& f) {
  std::string key = f.find("dtype") ? "dtype" : "torch_dtype";
  auto s = f.opt_string(key);
  if (!s) return DType::F32;  // transformers' default
  if (*s == "bfloat16") return DType::BF16;
  if (*s == "float16" || *s == "half") return DType::F16;
  if (*s == "float32" || *s == "float") return DType::F32;
  fail(file, "{} '{}' is not supported (bfloat16, float16 or float32)", key, printable(*s));
}

const Arch& find_arch(const std::string& file, const json& j) {
  auto it = j.find("architectures");
  std::string name;
  if (it != j.end() && !it->is_null()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string())
      fail(file, "field 'architectures' must be a non-empty list of strings, got {}",
           io::preview(*it));
    name = (*it)[0].get<std::string>();
    for (const Arch& a : kArchs)
      if (a.name == name) return a;
    fail(file, "architectures[0] '{}' is not supported; supported: {}", printable(name), kSupported);
  }
  // Some hand-written configs carry only model_type.
  auto mt = Fields(file, j).opt_string("model_type");
  if (!mt) fail(file, "missing field 'architectures' (and no model_type)");
  for (const Arch& a : kArchs)
    if (a.model_type == *mt) return a;
  fail(file, "model_type '{}' is not supported; supported architectures: {}", printable(*mt),
       kSupported);
}

ModelConfig parse(const std::string& path, const json& j, json* quantization) {
  if (!j.is_object()) fail(path, "config is a JSON {}, expected an object", json_type(j));
  const Arch& arch = find_arch(path, j);
  Fields f(path, j);
  ModelConfig c;
  c.architecture = arch.name;
  c.model_type = arch.model_type;
  c.qkv_bias = arch.qkv_bias;
  c.qk_norm = arch.qk_norm;

  c.hidden = f.dim("hidden_size");
  c.intermediate = f.dim("intermediate_size");
  c.n_layers = f.dim("num_hidden_layers");
  // Every layer expects nine tensors, listed before any is looked up: a corrupt count of 10^7
  // would grow memory without bound. The deepest Llama-family models have ~130 layers.
  if (c.n_layers > kMaxLayers)
    fail(path, "num_hidden_layers {} is beyond any supported model (at most {})", c.n_layers,
         kMaxLayers);
  c.n_heads = f.dim("num_attention_heads");
  c.n_kv_heads = f.dim("num_key_value_heads", c.n_heads);
  c.vocab = f.dim("vocab_size");
  c.max_positions = f.dim("max_position_embeddings", arch.max_positions);
  if (f.find("head_dim") || arch.head_dim) {
    c.head_dim = f.dim("head_dim", arch.head_dim);
  } else {
    if (c.hidden % c.n_heads != 0)
      fail(path, "hidden_size {} is not divisible by num_attention_heads {} (and head_dim is not given)",
           c.hidden, c.n_heads);
    c.head_dim = c.hidden / c.n_heads;
  }
  if (c.n_heads % c.n_kv_heads != 0)
    fail(path, "num_attention_heads {} is not divisible by num_key_value_heads {}", c.n_heads,
         c.n_kv_heads);
  if (c.head_dim % 2 != 0)
    fail(path, "head_dim {} is odd; rotary embeddings need an even head_dim", c.head_dim);

  // Checked against the float the forward pass uses: 1e39 is a finite double but no float (and
  // converting it is undefined behaviour, so the range is checked in double first), 1e-60
  // rounds to a zero float.
  double eps = f.opt_number("rms_norm_eps").value_or(1e-6);
  if (!(eps > 0 && eps <= double(std::numeric_limits<float>::max()) && float(eps) > 0))
    fail(path, "field 'rms_norm_eps' must be a positive float32, got {}", eps);
  c.rms_eps = float(eps);

  auto theta_top = f.opt_number("rope_theta");
  float theta = checked_float(path, theta_top.value_or(10000.0), "rope_theta");
  check_rope(path, j, "rope_scaling", &theta);
  float theta_before = theta;
  check_rope(path, j, "rope_parameters", &theta);
  if (theta_top && theta != theta_before)
    fail(path, "rope_theta {} disagrees with rope_parameters.rope_theta {}", theta_before, theta);
  if (!(theta > 0 && std::isfinite(theta)))
    fail(path, "rope_theta must be positive, got {}", theta);
  c.rope_theta = theta;

  if (auto act = f.opt_string("hidden_act"); act && *act != "silu")
    fail(path, "hidden_act '{}' is not supported (only silu)", printable(*act));
  // Qwen2 has q/k/v biases whatever attention_bias says; elsewhere biases are not implemented.
  if (!arch.qkv_bias && f.opt_bool("attention_bias").value_or(false))
    fail(path, "attention_bias true is not supported for {}", arch.name);
  if (f.opt_bool("mlp_bias").value_or(false)) fail(path, "mlp_bias true is not supported");

  if (arch.model_type == "mistral") {
    // MistralConfig's default window is 4096; an explicit null means full attention.
    auto it = j.find("sliding_window");
    if (it == j.end()) c.sliding_window = 4096;
    else if (!it->is_null()) c.sliding_window = f.dim("sliding_window");
  } else if (arch.model_type == "qwen2" || arch.model_type == "qwen3") {
    // Sliding layers are those from max_window_layers on when use_sliding_window is set, or
    // those layer_types names so; the window limit then caps the usable context.
    bool sliding = false;
    if (f.opt_bool("use_sliding_window").value_or(false))
      sliding = f.opt_int("max_window_layers").value_or(28) < c.n_layers;
    if (const json* lt = f.find("layer_types")) {
      if (!lt->is_array()) f.type_error("layer_types", *lt, "a list of strings");
      for (const json& t : *lt) {
        if (t == "sliding_attention") sliding = true;
        else if (t != "full_attention")
          fail(path, "layer_types entry {} is not supported", io::preview(t));
      }
    }
    if (sliding) c.sliding_window = f.dim("sliding_window", 4096);
  }

  c.tied_embeddings = f.opt_bool("tie_word_embeddings").value_or(false);
  c.bos_id = f.token_id("bos_token_id", arch.bos, c.vocab);
  c.eos_id = f.token_id("eos_token_id", arch.eos, c.vocab);
  c.dtype = parse_dtype(path, f);

  if (const json* q = f.find("quantization_config")) {
    if (!q->is_object()) f.type_error("quantization_config", *q, "an object");
    auto method = Fields(path, *q, "quantization_config.").opt_string("quant_method");
    if (!method) fail(path, "quantization_config has no quant_method");
    if (*method != "lrquant")
      fail(path, "quantization_config.quant_method '{}' is not supported (only lrquant)",
           printable(*method));
    if (quantization) *quantization = *q;
  }
  return c;
}

// The tokenizer's own config decides whether a BOS is prepended; Qwen's tokenizers never add
// one, Llama's and Mistral's do.
bool read_add_bos(const std::string& config_path, const ModelConfig& c) {
  if (c.bos_id < 0) return false;
  bool dflt = !(c.model_type == "qwen2" || c.model_type == "qwen3");
  fs::path tc = fs::path(config_path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::exists(tc, ec)) return dflt;
  std::string file = tc.string();
  json j = io::parse_json(read_text_file(file), file, "tokenizer config");
  if (!j.is_object()) fail(file, "tokenizer config is a JSON {}, expected an object", json_type(j));
  return Fields(file, j).opt_bool("add_bos_token").value_or(dflt);
}

}  // namespace

ModelConfig parse_hf_config(const std::string& path, nlohmann::json* quantization) {
  json j = io::parse_json(read_text_file(path), path, "config");
  ModelConfig c;
  try {
    c = parse(path, j, quantization);
  } catch (const json::exception& e) {
    // Every access above is type-checked first; this is a safety net for a one-line message.
    fail(path, "unexpected content: {}", printable(e.what(), 300));
  }
  c.add_bos = read_add_bos(path, c);
  return c;
}

ModelConfig parse_hf_config(const std::string& path) { return parse_hf_config(path, nullptr); }

}  // namespace lrq
