#include "formats/load_model.h"

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
  return std::make_unique<Model>(ckpt, make);
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
