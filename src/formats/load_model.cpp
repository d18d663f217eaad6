#include "formats/load_model.h"

#include <cmath>

#include "backend/memory.h"
#include "formats/registry.h"

namespace lrq {

namespace {
void require_device(Device d, const std::string& arg) {
  if (d != Device::CUDA) return;
#if !defined(LRQ_WITH_CUDA)
  fail(arg,
       "cuda requested, but this build of lrquant has no CUDA backend (configure with "
       "-DLRQ_CUDA=ON)");
#else
  if (!backend::cuda_available()) fail(arg, "cuda requested, but no CUDA GPU is visible");
#endif
}

// quantization_config.activations (docs/FORMAT.md): what eval and generate run with. Every
// field is checked; a problem is an Error naming the file and the field.
ActivationQuant read_activations(const nlohmann::json& j, int64_t n_layers,
                                 const std::string& where) {
  ActivationQuant a;
  auto bad = [&](const std::string& what) -> void {
    fail(where, "quantization_config.activations: {}", what);
  };
  if (!j.is_object()) bad("must be an object");
  for (const auto& [k, v] : j.items())
    if (k != "a8" && k != "kv8" && k != "bits" && k != "smooth" && k != "sites" && k != "steps")
      bad("unknown field '" + k + "'");
  const std::string mode = j.contains("a8") && j["a8"].is_string() ? j["a8"].get<std::string>()
                                                                   : "?";
  if (mode == "off") a.a8 = ActivationQuant::Mode::Off;
  else if (mode == "token") a.a8 = ActivationQuant::Mode::Token;
  else if (mode == "tensor") a.a8 = ActivationQuant::Mode::Tensor;
  else bad("a8 must be \"off\", \"token\" or \"tensor\"");
  if (!j.contains("kv8") || !j["kv8"].is_boolean()) bad("kv8 must be true or false");
  a.kv8 = j["kv8"].get<bool>();
  if (!j.contains("bits") || !j["bits"].is_number_integer() ||
      j["bits"].get<int64_t>() != ActivationQuant::kBits)
    bad("bits must be 8 (the only activation width this version runs)");
  if (j.contains("smooth") && !j["smooth"].is_null()) {
    if (!j["smooth"].is_number() || !std::isfinite(j["smooth"].get<double>()) ||
        j["smooth"].get<double>() < 0 || j["smooth"].get<double>() > 1)
      bad("smooth must be null or a number in [0, 1]");
    a.smooth = j["smooth"].get<double>();
  }
  if (a.a8 != ActivationQuant::Mode::Tensor) {
    if (j.contains("steps")) bad("steps given without a8 = \"tensor\"");
    return a;
  }
  const nlohmann::json& st = j.contains("steps") ? j["steps"] : nlohmann::json();
  if (!st.is_array() || int64_t(st.size()) != n_layers)
    bad(fmt::format("steps must hold one entry per layer ({})", n_layers));
  for (int64_t l = 0; l < n_layers; ++l) {
    const nlohmann::json& e = st[size_t(l)];
    if (!e.is_array() || e.size() != 4)
      bad(fmt::format("steps[{}] must hold 4 numbers (attn_in, o_in, mlp_in, down_in)", l));
    std::array<float, 4> v{};
    for (int s = 0; s < 4; ++s) {
      // JSON has no inf or NaN: a writer that had one wrote null; a huge literal reads as inf.
      const double x = e[size_t(s)].is_number() ? e[size_t(s)].get<double>() : std::nan("");
      const float f = float(x);
      if (!std::isfinite(f) || !(f > 0))
        bad(fmt::format("steps[{}][{}] ({}) is not a finite positive number", l,
                        site_name(Site(s)), e[size_t(s)].dump()));
      v[size_t(s)] = f;
    }
    a.steps.push_back(v);
  }
  return a;
}

std::unique_ptr<Model> open_on_cpu(const std::string& path) {
  auto ckpt = std::make_shared<const Checkpoint>(load_checkpoint(path));
  if (ckpt->quantization.is_null()) return std::make_unique<Model>(ckpt);
  const nlohmann::json& layers = ckpt->quantization.at("layers");
  const ModelConfig& c = ckpt->config;
  auto make = [&](const std::string& name) -> std::unique_ptr<Linear> {
    if (!layers.contains(name)) return nullptr;
    // Input/output widths the graph implies for this projection.
    const std::string s = name.substr(name.find('.', std::string("model.layers.").size()) + 1);
    int64_t in = c.hidden, out = c.hidden;
    if (s == "self_attn.q_proj") out = c.q_width();
    if (s == "self_attn.k_proj" || s == "self_attn.v_proj") out = c.kv_width();
    if (s == "self_attn.o_proj") in = c.q_width();
    if (s == "mlp.gate_proj" || s == "mlp.up_proj") out = c.intermediate;
    if (s == "mlp.down_proj") in = c.intermediate;
    LayerSource src{name, layers.at(name), [&](const std::string& t) { return ckpt->get(t); },
                    in, out, path + ": layer " + name};
    std::unique_ptr<Linear> q = load_layer(src);
    if (ckpt->has(name + ".bias"))
      return std::make_unique<BiasedLinear>(std::move(q), ckpt->get(name + ".bias"));
    return q;
  };
  auto model = std::make_unique<Model>(ckpt, make);
  if (ckpt->quantization.contains("activations"))
    model->set_activation_quant(
        read_activations(ckpt->quantization["activations"], c.n_layers, path + "/config.json"));
  return model;
}
}  // namespace

Device parse_device(const std::string& name, const std::string& arg) {
  Device d;
  if (name == "cpu")
    d = Device::CPU;
  else if (name == "cuda")
    d = Device::CUDA;
  else
    fail(arg, "unknown device '{}' (valid: cpu, cuda)", name);
  require_device(d, arg);
  return d;
}

std::unique_ptr<Model> load_model(const std::string& path, Device device,
                                  const std::string& device_arg) {
  require_device(device, device_arg);
  auto m = open_on_cpu(path);
  m->to(device);
  return m;
}

}  // namespace lrq
