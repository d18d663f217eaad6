// Method registry: recipe name -> the entry a method file registered, and the composition of a
// base method with its modifier stages. Registered orders keep the listing of
// `lrquant recipes`: fp 10, rtn 20, gptq 30, awq 40, nf 50, flrq 60, lopro 70, lr 80.
#include <algorithm>

#include "core/error.h"
#include "core/registry.h"
#include "quant/methods/common.h"

namespace lrq {

namespace {
Registry<MethodEntry>& registry() {
  static Registry<MethodEntry> r("method");
  return r;
}
}  // namespace

bool register_method(MethodEntry e) {
  const std::string name = e.spec.name;
  return registry().add(name, std::move(e));
}

const std::vector<MethodSpec>& method_specs() {
  // Rebuilt when a registration came after the last call (a test's own method).
  static std::vector<MethodSpec> specs;
  static size_t seen = size_t(-1);
  if (seen != registry().size()) {
    std::vector<const MethodEntry*> all;
    for (const auto& [_, e] : registry().entries()) all.push_back(&e);
    std::stable_sort(all.begin(), all.end(),
                     [](const auto* a, const auto* b) { return a->order < b->order; });
    specs.clear();
    for (const auto* e : all) specs.push_back(e->spec);
    seen = registry().size();
  }
  return specs;
}

bool is_block_method(const Recipe& r) {
  const MethodEntry* e = registry().find(r.base().method);
  return e && e->block;
}

std::unique_ptr<BlockMethod> make_block_method(const Recipe& r) {
  const MethodEntry* e = registry().find(r.base().method);
  if (!e || !e->block)
    fail("recipe", "method '{}' does not quantize whole blocks", r.base().method);
  if (r.stages.size() > 1)
    fail("recipe", "block method '{}' takes no modifier stages", r.base().method);
  return e->block(r.base());
}

uint64_t layer_seed(uint64_t run_seed, const std::string& layer_name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the full name
  for (unsigned char c : layer_name) h = (h ^ c) * 0x100000001b3ull;
  uint64_t z = run_seed ^ h;  // then one SplitMix64 finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::unique_ptr<Method> make_method(const Recipe& r) {
  const MethodEntry* e = registry().find(r.base().method);
  if (e && e->block)
    fail("recipe", "method '{}' quantizes whole blocks, not single layers", r.base().method);
  if (!e || !e->layer)
    fail("recipe", "method '{}' cannot quantize a layer", r.base().method);
  // Base method, then the modifier stages of the recipe in order, each wrapping the one before.
  std::unique_ptr<Method> m = e->layer(r.base());
  for (size_t k = 1; k < r.stages.size(); ++k) {
    const Stage& s = r.stages[k];
    if (s.method != "lr") fail("recipe", "modifier '{}' is not implemented", s.method);
    m = with_error_correction(std::move(m), s);
  }
  return m;
}

}  // namespace lrq
