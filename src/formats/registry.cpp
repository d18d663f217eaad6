#include "formats/registry.h"

#include "core/error.h"
#include "core/registry.h"

namespace lrq {

namespace {
Registry<LayerLoader>& kinds() {
  static Registry<LayerLoader> k("layer kind");
  return k;
}
}  // namespace

bool register_layer_kind(const std::string& kind, LayerLoader loader) {
  return kinds().add(kind, loader);
}

std::vector<std::string> layer_kinds() { return kinds().names(); }

std::unique_ptr<Linear> load_layer(const LayerSource& src) {
  if (!src.meta.is_object()) fail(src.where, "layer metadata is not a JSON object");
  std::string kind = "packed";
  if (auto it = src.meta.find("kind"); it != src.meta.end()) {
    if (!it->is_string()) fail(src.where, "layer kind must be a string, got {}", it->type_name());
    kind = it->get<std::string>();
  }
  const LayerLoader* load = kinds().find(kind);
  if (!load)
    fail(src.where, "unknown layer kind '{}' (this build reads: {})", kind, kinds().joined());
  return (*load)(src);
}

}  // namespace lrq
