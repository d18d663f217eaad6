// The Llama-family forward pass (Llama, Mistral, Qwen2 q/k/v biases, Qwen3 q/k norms,
// llama2.c), on whichever device the tensors live.
//
// Every projection is a Linear owned by the model and replaceable by name, so quantization
// swaps layers without touching this code. Blocks run one at a time through block_forward(),
// which the calibration runner calls directly; observers see every projection's input, and a
// caller that needs the intermediate activations (a later backward pass) asks for them.
#pragma once
#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/linear.h"

namespace lrq {

/// The four distinct inputs of a block's projections: q/k/v share one, gate/up share one.
enum class Site : uint8_t { AttnIn, OIn, MlpIn, DownIn };
std::string_view site_name(Site s);
/// The projections fed by a site ("self_attn.q_proj", ...), in dependency order.
std::vector<std::string> site_projections(Site s);
/// All seven projection short names in dependency order.
const std::vector<std::string>& projection_names();

/// Called with a block index, a site and that site's input activations (T x in, F32).
using SiteObserver = std::function<void(int64_t layer, Site site, const Tensor& x)>;

/// Per-layer K/V storage for positions 0..capacity-1.
struct KVCache {
  std::vector<Tensor> K, V;  // per layer: capacity x kv_width, F32
  int64_t capacity = 0;  // 0: no cache (block_forward from position 0 only, nothing kept)
  int64_t length = 0;    // positions filled
};

/// Activation quantization at inference (recipe options a8, a8=tensor, kv8; docs/RECIPES.md):
/// fake quantization (quantize-dequantize in F32) of what the projections read and of what
/// enters the KV cache. Off by default; a quantized folder that stores it turns it on when
/// loaded (formats/load_model.cpp), and the quantizer sets it only after calibrating, so
/// calibration always sees full-precision activations.
struct ActivationQuant {
  enum class Mode : uint8_t { Off, Token, Tensor };
  static constexpr int kBits = 8;
  /// Inputs of all seven projections: per token (each row its own asymmetric grid, computed
  /// at run time) or per tensor (one static symmetric step per site and layer, from calibration).
  Mode a8 = Mode::Off;
  /// Keys (after RoPE) and values, per token and KV head: each head_dim-wide slice of a row
  /// on its own asymmetric grid, as they enter the cache.
  bool kv8 = false;
  /// Mode::Tensor: the step of each site of each layer, steps[layer][int(Site)].
  std::vector<std::array<float, 4>> steps;
  /// SmoothQuant's alpha when the weights were smoothed (< 0: not): a record of how the folder
  /// was made; nothing is done with it at run time (the migration is in the weights).
  double smooth = -1;
  bool active() const { return a8 != Mode::Off || kv8; }
};
std::string_view act_mode_name(ActivationQuant::Mode m);

struct Block {
  Tensor attn_norm, mlp_norm;
  Tensor q_norm, k_norm;  // Qwen3, else undefined
  std::unique_ptr<Linear> q, k, v, o, gate, up, down;
  std::unique_ptr<Linear>& proj(const std::string& short_name);
  const Linear& proj(const std::string& short_name) const;
};

class Model {
 public:
  /// Builds the model over a loaded checkpoint (weights stay memory-mapped views). Quantized
  /// layers are created by `make_linear(name)` when it returns non-null; dense otherwise.
  explicit Model(std::shared_ptr<const Checkpoint> ckpt,
                 const std::function<std::unique_ptr<Linear>(const std::string&)>& make_linear = {});

  const ModelConfig& config() const { return cfg_; }
  const Checkpoint& checkpoint() const { return *ckpt_; }
  int64_t n_layers() const { return cfg_.n_layers; }
  Block& block(int64_t i) { return blocks_.at(i); }
  const Block& block(int64_t i) const { return blocks_.at(i); }

  /// Full names of the quantizable projections ("model.layers.3.mlp.down_proj").
  std::vector<std::string> linear_names() const;
  static std::string linear_name(int64_t layer, const std::string& short_name);
  const Linear& linear(const std::string& full_name) const;
  /// Replaces a projection; the replacement must live where its block does.
  void set_linear(const std::string& full_name, std::unique_ptr<Linear> layer);
  const Linear& lm_head() const { return *lm_head_; }

  /// Moves every weight (embedding, norms, projections, LM head) to `device`, in place; the
  /// activations of forward(), block_forward(), head() and make_cache() then live there too.
  /// Moving to the GPU copies the weights once; the checkpoint's mapping stays open.
  void to(Device device);
  /// Where the weights (and so the activations) live.
  Device device() const { return embed_.device(); }
  /// Moves only block `layer`'s norms and projections to `device`: the streaming quantizer
  /// holds one block on the GPU at a time while the rest stays memory-mapped on the host.
  /// block_forward(layer) then takes activations on `device`.
  void block_to(int64_t layer, Device device);
  /// Where block `layer`'s weights live (the model's device unless block_to moved it).
  Device block_device(int64_t layer) const { return blocks_.at(layer).attn_norm.device(); }

  KVCache make_cache(int64_t capacity) const;

  /// Token embeddings of `ids` (T x hidden, F32). Ids must be < vocab (checked: Error).
  Tensor embed(std::span<const int32_t> ids) const;
  /// embed() of every sequence, on `device`. From a host model to the GPU the table crosses
  /// once instead of every sequence's F32 activations (7B calibration: 262 MB, not 4.3 GB).
  std::vector<Tensor> embed_all(const std::vector<std::vector<int32_t>>& seqs, Device device) const;
  /// One decoder block, in place on x (T x hidden) at positions pos0.. using the cache's
  /// layer slot (which must hold pos0 earlier positions); a cache of capacity 0 (KVCache{})
  /// runs a one-shot forward from position 0 with nothing stored. With `stop_after`, returns right
  /// after observing that site (x is then left unspecified): the calibration runner collects
  /// one site's statistics without paying for the rest of the block.
  void block_forward(int64_t layer, const Tensor& x, int64_t pos0, KVCache& cache,
                     const SiteObserver& observe = {},
                     std::optional<Site> stop_after = std::nullopt) const;
  /// Final norm + LM head: logits (T x vocab) of the rows of x (T x hidden).
  Tensor head(const Tensor& x) const;
  /// Runs ids at positions cache.length.. and appends them to the cache. Returns the logits
  /// of every position (all_logits) or of the last one (1 x vocab).
  Tensor forward(std::span<const int32_t> ids, KVCache& cache, bool all_logits) const;

  /// Turns activation quantization on (or off with a default ActivationQuant); Mode::Tensor
  /// needs one finite positive step per site of every layer (Error otherwise).
  void set_activation_quant(ActivationQuant a);
  const ActivationQuant& activation_quant() const { return act_; }

  /// Parameter count (embedding, head when untied, projections, norms).
  int64_t parameter_count() const;

 private:
  std::shared_ptr<const Checkpoint> ckpt_;
  ModelConfig cfg_;
  Tensor embed_, final_norm_;
  std::vector<Block> blocks_;
  std::unique_ptr<Linear> lm_head_;
  ActivationQuant act_;
};

}  // namespace lrq
