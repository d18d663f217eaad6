#include "formats/save.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <filesystem>
#include <map>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;

namespace lrq {

namespace {
// Removes a temporary folder unless released: the unwinding path of every failure.
struct TempDir {
  fs::path path;
  bool keep = false;
  ~TempDir() {
    std::error_code ec;
    if (!keep) fs::remove_all(path, ec);
  }
};

// The config.json to write: the source's own when it has one (so unknown fields survive),
// otherwise one synthesized from the model config (llama2.c sources).
nlohmann::json base_config(const Model& m) {
  const Checkpoint& ck = m.checkpoint();
  fs::path src = fs::path(ck.path) / "config.json";
  if (fs::is_directory(ck.path) && fs::exists(src)) {
    auto j = nlohmann::json::parse(read_text_file(src.string()));
    j.erase("quantization_config");
    return j;
  }
  const ModelConfig& c = m.config();
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", c.hidden},
          {"intermediate_size", c.intermediate},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"head_dim", c.head_dim},
          {"vocab_size", c.vocab},
          {"max_position_embeddings", c.max_positions},
          {"rms_norm_eps", c.rms_eps},
          {"rope_theta", c.rope_theta},
          {"tie_word_embeddings", c.tied_embeddings},
          {"bos_token_id", c.bos_id},
          {"eos_token_id", c.eos_id},
          {"hidden_act", "silu"},
          {"torch_dtype", "float32"},
          {"lrquant_rope_interleaved", c.rope_interleaved}};
}
}  // namespace

void refuse_output_over_input(const std::string& out_dir, const std::string& input,
                              const std::string& what) {
  if (input.empty()) return;
  std::error_code ec;
  // Resolved through links, without a trailing separator ("dir/" has an empty last component).
  auto resolve = [&](const std::string& p) {
    fs::path r = fs::weakly_canonical(fs::absolute(p), ec);
    return r.has_filename() ? r : r.parent_path();
  };
  const fs::path out = resolve(out_dir), in = resolve(input);
  if (ec) return;  // unresolvable: nothing of ours to protect there
  // `in` lies at or below `out` when out's components are a prefix of in's.
  auto o = out.begin(), i = in.begin();
  for (; o != out.end() && i != in.end() && *o == *i; ++o, ++i) {
  }
  if (o == out.end())
    fail(out_dir, "output folder would replace the {} {} (choose another --out)", what, input);
}

namespace {

bool process_alive(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

// Blocks SIGINT, SIGTERM and SIGHUP for its lifetime: the swap into place is two renames, and an
// interrupt between them would leave the output under its temporary name.
class NoInterrupts {
 public:
  NoInterrupts() {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &s, &saved_);
  }
  ~NoInterrupts() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  NoInterrupts(const NoInterrupts&) = delete;
  NoInterrupts& operator=(const NoInterrupts&) = delete;

 private:
  sigset_t saved_;
};

}  // namespace

std::vector<std::string> recover_stale_output(const std::string& out_dir) {
  std::vector<std::string> done;
  std::error_code ec;
  const fs::path out = fs::absolute(out_dir, ec);
  if (ec || !out.has_filename() || !fs::is_directory(out.parent_path(), ec)) return done;
  const std::string name = out.filename().string();
  const std::string partial = "." + name + ".partial-", old = "." + name + ".old-";
  for (const auto& e : fs::directory_iterator(out.parent_path(), ec)) {
    const std::string f = e.path().filename().string();
    const bool is_partial = f.rfind(partial, 0) == 0, is_old = f.rfind(old, 0) == 0;
    if (!is_partial && !is_old) continue;
    const std::string tail = f.substr((is_partial ? partial : old).size());
    if (tail.empty() || tail.find_first_not_of("0123456789") != std::string::npos) continue;
    if (process_alive(pid_t(std::stoll(tail)))) continue;  // another run at work
    std::error_code e2;
    if (is_old && !fs::exists(out, e2)) {
      fs::rename(e.path(), out, e2);
      if (!e2) done.push_back("restored the previous output " + out.string() + " from " + f);
    } else {
      fs::remove_all(e.path(), e2);
      if (!e2) done.push_back("removed " + f + ", left by an interrupted run");
    }
  }
  return done;
}

void check_output_writable(const std::string& out_dir) {
  std::error_code ec;
  const fs::path out = fs::absolute(out_dir, ec);
  if (ec || !out.has_parent_path() || !fs::is_directory(out.parent_path(), ec))
    fail(out_dir, "parent folder does not exist");
  const fs::path probe =
      out.parent_path() / ("." + out.filename().string() + ".probe-" + std::to_string(getpid()));
  if (!fs::create_directory(probe, ec) && ec)
    fail(out_dir, "cannot write in {}: {}", out.parent_path().string(), ec.message());
  fs::remove(probe, ec);
}

void save_quantized(const Model& m, const SaveOptions& o) {
  refuse_output_over_input(o.out_dir, m.checkpoint().path, "model");
  recover_stale_output(o.out_dir);
  const fs::path out = fs::absolute(o.out_dir);
  if (fs::exists(out) && !o.force)
    fail(o.out_dir, "output folder exists (pass --force to replace it)");
  if (!out.has_parent_path() || !fs::is_directory(out.parent_path()))
    fail(o.out_dir, "parent folder does not exist");
  TempDir tmp{out.parent_path() / ("." + out.filename().string() + ".partial-" +
                                   std::to_string(getpid()))};
  fs::remove_all(tmp.path);
  fs::create_directory(tmp.path);

  // Tensors: every non-projection tensor as stored, then each projection in its own form.
  std::vector<std::pair<std::string, Tensor>> tensors;
  const Checkpoint& ck = m.checkpoint();
  auto is_proj = [&](const std::string& n) {
    for (int64_t l = 0; l < m.n_layers(); ++l)
      for (const auto& p : projection_names())
        if (n.rfind(Model::linear_name(l, p) + ".", 0) == 0) return true;
    return false;
  };
  // The norms come from the model, not the source: smoothing (quant/activations.h) folds its
  // scales into them. Unsmoothed, they are the source's tensors (the same bytes).
  std::map<std::string, Tensor> norms;
  for (int64_t l = 0; l < m.n_layers(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    norms[p + "input_layernorm.weight"] = m.block(l).attn_norm.to(Device::CPU);
    norms[p + "post_attention_layernorm.weight"] = m.block(l).mlp_norm.to(Device::CPU);
  }
  for (const auto& [name, t] : ck.tensors)
    if (!is_proj(name) && (name != "lm_head.weight" || !m.config().tied_embeddings))
      tensors.emplace_back(name, norms.count(name) ? norms.at(name) : t);
  nlohmann::json layers = nlohmann::json::object();
  for (const auto& name : m.linear_names()) {
    // Each layer writes its own tensors; those with metadata are loaded back by kind.
    const Linear& lin = m.linear(name);
    nlohmann::json meta = lin.save(name, tensors);
    if (meta.is_null()) continue;
    meta["bytes"] = lin.storage_bytes();
    meta["bpw"] = lin.bits_per_weight();
    layers[name] = meta;
  }
  write_safetensors((tmp.path / "model.safetensors").string(), tensors,
                    {{"format", "pt"}, {"producer", "lrquant " LRQ_VERSION}});

  nlohmann::json cfg = base_config(m);
  nlohmann::json q = o.provenance;
  q["quant_method"] = "lrquant";
  q["format_version"] = 2;  // 2: every layer tagged with its kind
  q["layers"] = layers;
  const ActivationQuant& act = m.activation_quant();
  if (act.active() || act.smooth >= 0) {
    nlohmann::json a = {{"a8", std::string(act_mode_name(act.a8))},
                        {"kv8", act.kv8},
                        {"bits", ActivationQuant::kBits},
                        {"smooth", act.smooth >= 0 ? nlohmann::json(act.smooth) : nlohmann::json()}};
    if (act.a8 == ActivationQuant::Mode::Tensor) {
      // One step per site and layer; a float printed by the JSON writer reads back exactly.
      a["sites"] = {"attn_in", "o_in", "mlp_in", "down_in"};
      a["steps"] = nlohmann::json::array();
      for (const auto& st : act.steps) a["steps"].push_back({st[0], st[1], st[2], st[3]});
    }
    q["activations"] = a;
  }
  cfg["quantization_config"] = q;
  write_file_atomic((tmp.path / "config.json").string(), cfg.dump(2) + "\n");

  // Tokenizer and generation files travel with the weights.
  if (fs::is_directory(ck.path)) {
    for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json", "generation_config.json"})
      if (fs::exists(fs::path(ck.path) / f)) fs::copy_file(fs::path(ck.path) / f, tmp.path / f);
  } else if (!ck.tokenizer_path.empty()) {
    fs::copy_file(ck.tokenizer_path, tmp.path / fs::path(ck.tokenizer_path).filename());
  }

  // Swap into place; an existing folder (with --force) is removed only after the new one is
  // complete.
  const NoInterrupts hold;
  if (fs::exists(out)) {
    fs::path old = out.parent_path() / ("." + out.filename().string() + ".old-" +
                                        std::to_string(getpid()));
    fs::rename(out, old);
    fs::rename(tmp.path, out);
    fs::remove_all(old);
  } else {
    fs::rename(tmp.path, out);
  }
  tmp.keep = true;
}

}  // namespace lrq
