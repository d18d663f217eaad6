#include "formats/registry.h"

#include <cstdio>
#include <cstdlib>
#include <map>

#include "core/error.h"

namespace lrq {

namespace {
// Function-local so registrars in other files may run first (static initialization order).
std::map<std::string, LayerLoader>& kinds() {
  static std::map<std::string, LayerLoader> k;
  return k;
}
}  // namespace

bool register_layer_kind(const std::string& kind, LayerLoader loader) {
  if (!kinds().emplace(kind, loader).second) {
    std::fprintf(stderr, "lrquant: layer kind '%s' registered twice\n", kind.c_str());
    std::abort();
  }
  return true;
}

std::vector<std::string> layer_kinds() {
  std::vector<std::string> out;
  for (const auto& [k, _] : kinds()) out.push_back(k);
  return out;
}

std::unique_ptr<Linear> load_layer(const LayerSource& src) {
  const auto* tag = src.meta.is_object() ? &src.meta : nullptr;
  if (!tag) fail(src.where, "layer metadata is not a JSON object");
  std::string kind = "packed";
  if (auto it = src.meta.find("kind"); it != src.meta.end()) {
    if (!it->is_string()) fail(src.where, "layer kind must be a string, got {}", it->type_name());
    kind = it->get<std::string>();
  }
  auto it = kinds().find(kind);
  if (it == kinds().end()) {
    std::string known;
    for (const auto& k : layer_kinds()) known += (known.empty() ? "" : ", ") + k;
    fail(src.where, "unknown layer kind '{}' (this build reads: {})", kind, known);
  }
  return it->second(src);
}

}  // namespace lrq
