// The layer kinds a checkpoint can hold, by the "kind" tag each quantized layer writes into
// quantization_config.layers. A format registers its loader from its own file
// (LRQ_REGISTER_LAYER_KIND), so adding one touches nothing here; loading a folder looks the
// tag up and fails with the list of known kinds when it is not there.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/linear.h"

namespace lrq {

/// What a loader gets: the layer's name (its tensors are "<prefix>.<part>"), its metadata, a
/// lookup of stored tensors (an Error naming the checkpoint when one is missing), the widths
/// the model's graph implies, and `where` (checkpoint and layer) for error messages.
struct LayerSource {
  std::string prefix;
  const nlohmann::json& meta;
  std::function<Tensor(const std::string&)> get;
  int64_t in = 0, out = 0;
  std::string where;
};
using LayerLoader = std::unique_ptr<Linear> (*)(const LayerSource& src);

/// Adds a kind; a second registration of one name is a programming error (aborts at start).
bool register_layer_kind(const std::string& kind, LayerLoader loader);
/// Every registered kind, sorted.
std::vector<std::string> layer_kinds();
/// Builds the layer its metadata describes. Checkpoints of format_version 1 carry no tag: their
/// layers are all "packed".
std::unique_ptr<Linear> load_layer(const LayerSource& src);

#define LRQ_REGISTER_LAYER_KIND(ident, kind, loader) \
  [[maybe_unused]] static const bool lrq_layer_kind_##ident = ::lrq::register_layer_kind(kind, loader)

}  // namespace lrq
