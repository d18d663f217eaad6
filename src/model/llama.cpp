#include "model/llama.h"

#include "backend/ops.h"

#include <cmath>

namespace lrq {

namespace {
const std::vector<std::string> kProj = {"self_attn.q_proj", "self_attn.k_proj",
                                        "self_attn.v_proj", "self_attn.o_proj",
                                        "mlp.gate_proj",    "mlp.up_proj",
                                        "mlp.down_proj"};
}

std::string_view site_name(Site s) {
  switch (s) {
    case Site::AttnIn: return "attn_in";
    case Site::OIn: return "o_in";
    case Site::MlpIn: return "mlp_in";
    case Site::DownIn: return "down_in";
  }
  return "?";
}

std::string_view act_mode_name(ActivationQuant::Mode m) {
  switch (m) {
    case ActivationQuant::Mode::Off: return "off";
    case ActivationQuant::Mode::Token: return "token";
    case ActivationQuant::Mode::Tensor: return "tensor";
  }
  return "?";
}

std::vector<std::string> site_projections(Site s) {
  switch (s) {
    case Site::AttnIn: return {kProj[0], kProj[1], kProj[2]};
    case Site::OIn: return {kProj[3]};
    case Site::MlpIn: return {kProj[4], kProj[5]};
    case Site::DownIn: return {kProj[6]};
  }
  return {};
}

const std::vector<std::string>& projection_names() { return kProj; }

std::unique_ptr<Linear>& Block::proj(const std::string& n) {
  if (n == kProj[0]) return q;
  if (n == kProj[1]) return k;
  if (n == kProj[2]) return v;
  if (n == kProj[3]) return o;
  if (n == kProj[4]) return gate;
  if (n == kProj[5]) return up;
  if (n == kProj[6]) return down;
  fail("model", "unknown projection '{}'", n);
}

const Linear& Block::proj(const std::string& n) const {
  return *const_cast<Block*>(this)->proj(n);
}

std::string Model::linear_name(int64_t layer, const std::string& short_name) {
  return "model.layers." + std::to_string(layer) + "." + short_name;
}

Model::Model(std::shared_ptr<const Checkpoint> ckpt,
             const std::function<std::unique_ptr<Linear>(const std::string&)>& make_linear)
    : ckpt_(std::move(ckpt)), cfg_(ckpt_->config) {
  embed_ = ckpt_->get("model.embed_tokens.weight");
  final_norm_ = ckpt_->get("model.norm.weight");
  blocks_.resize(cfg_.n_layers);
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    Block& b = blocks_[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    b.attn_norm = ckpt_->get(p + "input_layernorm.weight");
    b.mlp_norm = ckpt_->get(p + "post_attention_layernorm.weight");
    if (cfg_.qk_norm) {
      b.q_norm = ckpt_->get(p + "self_attn.q_norm.weight");
      b.k_norm = ckpt_->get(p + "self_attn.k_norm.weight");
    }
    for (const auto& s : kProj) {
      const std::string name = p + s;
      std::unique_ptr<Linear> lin = make_linear ? make_linear(name) : nullptr;
      if (!lin) {
        Tensor bias;
        if (cfg_.qkv_bias && (s == kProj[0] || s == kProj[1] || s == kProj[2]))
          bias = ckpt_->get(name + ".bias");
        lin = std::make_unique<DenseLinear>(ckpt_->get(name + ".weight"), bias);
      }
      b.proj(s) = std::move(lin);
    }
  }
  lm_head_ = std::make_unique<DenseLinear>(
      cfg_.tied_embeddings ? embed_ : ckpt_->get("lm_head.weight"));
}

std::vector<std::string> Model::linear_names() const {
  std::vector<std::string> out;
  for (int64_t l = 0; l < cfg_.n_layers; ++l)
    for (const auto& s : kProj) out.push_back(linear_name(l, s));
  return out;
}

namespace {
// "model.layers.3.mlp.down_proj" -> (3, "mlp.down_proj")
std::pair<int64_t, std::string> split_name(const std::string& full, int64_t n_layers) {
  const std::string pre = "model.layers.";
  if (full.rfind(pre, 0) == 0) {
    size_t dot = full.find('.', pre.size());
    if (dot != std::string::npos) {
      try {
        int64_t l = std::stoll(full.substr(pre.size(), dot - pre.size()));
        std::string s = full.substr(dot + 1);
        if (l >= 0 && l < n_layers &&
            std::find(kProj.begin(), kProj.end(), s) != kProj.end())
          return {l, s};
      } catch (const std::exception&) {
      }
    }
  }
  fail("model", "'{}' is not a projection of this model", full);
}
}  // namespace

const Linear& Model::linear(const std::string& full) const {
  auto [l, s] = split_name(full, cfg_.n_layers);
  return blocks_[l].proj(s);
}

void Model::set_linear(const std::string& full, std::unique_ptr<Linear> layer) {
  auto [l, s] = split_name(full, cfg_.n_layers);
  auto& slot = blocks_[l].proj(s);
  if (layer->in_features() != slot->in_features() ||
      layer->out_features() != slot->out_features())
    fail("model", "replacement for {} is {}x{}, expected {}x{}", full, layer->out_features(),
         layer->in_features(), slot->out_features(), slot->in_features());
  if (layer->device() != block_device(l))
    fail("model", "replacement for {} is on {}, its block on {}", full,
         device_name(layer->device()), device_name(block_device(l)));
  slot = std::move(layer);
}

void Model::to(Device d) {
  embed_ = embed_.to(d);
  final_norm_ = final_norm_.to(d);
  for (Block& b : blocks_) {
    for (Tensor* t : {&b.attn_norm, &b.mlp_norm, &b.q_norm, &b.k_norm}) *t = t->to(d);
    for (const auto& s : kProj) b.proj(s) = b.proj(s)->to(d);
  }
  // A tied head shares the moved embedding instead of copying the table a second time.
  lm_head_ = cfg_.tied_embeddings ? std::make_unique<DenseLinear>(embed_) : lm_head_->to(d);
}

void Model::block_to(int64_t layer, Device d) {
  Block& b = blocks_.at(layer);
  for (Tensor* t : {&b.attn_norm, &b.mlp_norm, &b.q_norm, &b.k_norm}) *t = t->to(d);
  for (const auto& s : kProj) b.proj(s) = b.proj(s)->to(d);
}

KVCache Model::make_cache(int64_t capacity) const {
  KVCache c;
  c.capacity = capacity;
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    c.K.push_back(Tensor::empty({capacity, cfg_.kv_width()}, DType::F32, embed_.device()));
    c.V.push_back(Tensor::empty({capacity, cfg_.kv_width()}, DType::F32, embed_.device()));
  }
  return c;
}

namespace {
Tensor embed_with(const Tensor& table, std::span<const int32_t> ids, const ModelConfig& cfg) {
  for (int32_t id : ids)
    if (id < 0 || id >= cfg.vocab)
      fail("input", "token id {} is outside the vocabulary [0, {})", id, cfg.vocab);
  Tensor out = Tensor::empty({int64_t(ids.size()), cfg.hidden}, DType::F32, table.device());
  ops::embedding(table, ids, out);
  return out;
}
}  // namespace

Tensor Model::embed(std::span<const int32_t> ids) const { return embed_with(embed_, ids, cfg_); }

std::vector<Tensor> Model::embed_all(const std::vector<std::vector<int32_t>>& seqs,
                                     Device device) const {
  const Tensor table = embed_.to(device);
  std::vector<Tensor> out;
  out.reserve(seqs.size());
  for (const auto& ids : seqs) out.push_back(embed_with(table, ids, cfg_));
  return out;
}

void Model::block_forward(int64_t layer, const Tensor& x, int64_t pos0, KVCache& cache,
                          const SiteObserver& observe, std::optional<Site> stop_after) const {
  const Block& b = blocks_.at(layer);
  const int64_t T = x.dim(0);
  const Device dev = x.device();
  // A cache of capacity 0 means a one-shot forward from position 0 (calibration): attention
  // reads this call's k and v directly instead of copies in a cache nobody reads again.
  const bool cached = cache.capacity > 0;
  if (!cached && pos0 != 0)
    fail("model", "a forward from position {} needs a KV cache", pos0);
  if (cached && pos0 + T > cache.capacity)
    fail("model", "sequence of {} positions exceeds the cache capacity {}", pos0 + T,
         cache.capacity);
  auto buf = [&](int64_t n) { return Tensor::empty({T, n}, DType::F32, dev); };
  // What a projection reads, fake-quantized in place when activation quantization is on
  // (after the observers: calibration never runs with it on, see ActivationQuant).
  auto quantize_input = [&](const Tensor& t, Site s) {
    if (act_.a8 == ActivationQuant::Mode::Token)
      ops::fake_quant_rows(t, ActivationQuant::kBits);
    else if (act_.a8 == ActivationQuant::Mode::Tensor)
      ops::fake_quant_tensor(t, act_.steps[size_t(layer)][int(s)], ActivationQuant::kBits);
  };

  // Attention.
  Tensor h = buf(cfg_.hidden);
  ops::rmsnorm(x, b.attn_norm, cfg_.rms_eps, h);
  if (observe) observe(layer, Site::AttnIn, h);
  if (stop_after == Site::AttnIn) return;
  quantize_input(h, Site::AttnIn);
  Tensor q = buf(cfg_.q_width()), k = buf(cfg_.kv_width()), v = buf(cfg_.kv_width());
  forward_shared_input(h, {b.q.get(), b.k.get(), b.v.get()}, {q, k, v});
  if (cfg_.qk_norm) {
    Tensor qh = q.reshape({T * cfg_.n_heads, cfg_.head_dim});
    Tensor kh = k.reshape({T * cfg_.n_kv_heads, cfg_.head_dim});
    ops::rmsnorm(qh, b.q_norm, cfg_.rms_eps, qh);
    ops::rmsnorm(kh, b.k_norm, cfg_.rms_eps, kh);
  }
  ops::rope(q, cfg_.n_heads, cfg_.head_dim, pos0, cfg_.rope_theta, cfg_.rope_interleaved);
  ops::rope(k, cfg_.n_kv_heads, cfg_.head_dim, pos0, cfg_.rope_theta, cfg_.rope_interleaved);
  if (act_.kv8) {
    // Per token and KV head: the granularity of a cache that stores each head's slice with
    // its own scale and zero point.
    ops::fake_quant_rows(k.reshape({T * cfg_.n_kv_heads, cfg_.head_dim}), ActivationQuant::kBits);
    ops::fake_quant_rows(v.reshape({T * cfg_.n_kv_heads, cfg_.head_dim}), ActivationQuant::kBits);
  }
  if (cached) {
    cache.K[layer].rows(pos0, pos0 + T).copy_from(k);
    cache.V[layer].rows(pos0, pos0 + T).copy_from(v);
  }
  Tensor att = buf(cfg_.q_width());
  ops::attention(q, cached ? cache.K[layer] : k, cached ? cache.V[layer] : v, cfg_.n_heads,
                 cfg_.n_kv_heads, cfg_.head_dim, pos0, att);
  if (observe) observe(layer, Site::OIn, att);
  if (stop_after == Site::OIn) return;
  quantize_input(att, Site::OIn);
  Tensor o = buf(cfg_.hidden);
  b.o->forward(att, o);
  ops::add_inplace(x, o);

  // MLP.
  Tensor m = h;
  ops::rmsnorm(x, b.mlp_norm, cfg_.rms_eps, m);
  if (observe) observe(layer, Site::MlpIn, m);
  if (stop_after == Site::MlpIn) return;
  quantize_input(m, Site::MlpIn);
  Tensor g = buf(cfg_.intermediate), u = buf(cfg_.intermediate);
  forward_shared_input(m, {b.gate.get(), b.up.get()}, {g, u});
  Tensor a = g;
  ops::silu_mul(g, u, a);
  if (observe) observe(layer, Site::DownIn, a);
  if (stop_after == Site::DownIn) return;
  quantize_input(a, Site::DownIn);
  b.down->forward(a, o);
  ops::add_inplace(x, o);
}

Tensor Model::head(const Tensor& x) const {
  Tensor n = Tensor::empty({x.dim(0), cfg_.hidden}, DType::F32, x.device());
  ops::rmsnorm(x, final_norm_, cfg_.rms_eps, n);
  Tensor logits = Tensor::empty({x.dim(0), cfg_.vocab}, DType::F32, x.device());
  lm_head_->forward(n, logits);
  return logits;
}

Tensor Model::forward(std::span<const int32_t> ids, KVCache& cache, bool all_logits) const {
  const int64_t T = int64_t(ids.size());
  LRQ_ASSERT(T > 0);
  const int64_t pos0 = cache.length;
  const int64_t limit = cfg_.sliding_window > 0 ? cfg_.sliding_window : cfg_.max_positions;
  if (pos0 + T > limit)
    fail("input", "{} positions exceed the model's maximum context of {}", pos0 + T, limit);
  Tensor x = embed(ids);
  for (int64_t l = 0; l < cfg_.n_layers; ++l) block_forward(l, x, pos0, cache);
  cache.length = pos0 + T;
  return head(all_logits ? x : x.rows(T - 1, T));
}

void Model::set_activation_quant(ActivationQuant a) {
  if (a.a8 == ActivationQuant::Mode::Tensor) {
    if (int64_t(a.steps.size()) != cfg_.n_layers)
      fail("model", "a8=tensor needs activation steps for {} layers, got {}", cfg_.n_layers,
           a.steps.size());
    for (size_t l = 0; l < a.steps.size(); ++l)
      for (int s = 0; s < 4; ++s)
        if (!std::isfinite(a.steps[l][s]) || !(a.steps[l][s] > 0))
          fail("model", "layer {} {}: activation step {} is not finite and positive", l,
               site_name(Site(s)), a.steps[l][s]);
  } else {
    a.steps.clear();
  }
  act_ = std::move(a);
}

int64_t Model::parameter_count() const {
  int64_t n = embed_.numel() + final_norm_.numel();
  if (!cfg_.tied_embeddings) n += lm_head_->in_features() * lm_head_->out_features();
  for (const Block& b : blocks_) {
    n += b.attn_norm.numel() + b.mlp_norm.numel();
    if (b.q_norm.defined()) n += b.q_norm.numel() + b.k_norm.numel();
    for (const auto& s : kProj) {
      const Linear& p = b.proj(s);
      n += p.in_features() * p.out_features();
    }
    if (cfg_.qkv_bias) n += cfg_.q_width() + 2 * cfg_.kv_width();
  }
  return n;
}

}  // namespace lrq
