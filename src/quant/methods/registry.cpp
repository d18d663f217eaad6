// Method registry: recipe name -> factory, and the composition with modifier stages.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "core/error.h"
#include "quant/error_correction.h"
#include "quant/methods/common.h"
#include "quant/objective.h"

namespace lrq {

RtnOptions grid_options(const Stage& s) {
  RtnOptions o;
  o.bits = int(s.i("bits"));
  o.group = s.i("group");
  o.symmetric = s.flag("sym");
  o.clip_search = s.flag("clip");
  return o;
}

GptqOptions gptq_options(const Stage& s) {
  GptqOptions o;
  o.grid = grid_options(s);
  o.act_order = s.flag("act_order");
  o.static_groups = s.flag("static_groups");
  o.damp = s.f("damp");
  o.block = s.i("blocksize");
  if (o.block <= 0) fail("recipe", "{}: blocksize must be positive", s.method);
  return o;
}

FlexRankOptions flex_options(const Stage& s) {
  FlexRankOptions o;
  o.bits = double(s.i("bits"));
  o.x = s.f("x");
  o.flat = s.f("flat");
  o.act = s.f("act");
  o.fixed_rank = int(s.i("rank"));
  o.max_rank = int(s.i("maxrank"));
  const std::string sk = s.s("sketch"), it = std::to_string(s.i("it"));
  o.spec = LowRankSpec::parse(sk == "svd"    ? std::string("svd")
                              : sk == "rsvd" ? "rsvd:q=" + it
                                             : sk + ":it=" + it);
  return o;
}

Tensor diag_h(const SiteStats& st) {
  const int64_t n = st.in();
  const std::vector<double> h = hessian_diagonal(st.H());
  Tensor d = Tensor::empty({n});
  for (int64_t i = 0; i < n; ++i) d.data<float>()[i] = float(h[size_t(i)]);
  return d;
}

std::shared_ptr<const SiteTensors> site_tensors(const SiteStats& st, Device device) {
  if (st.H().device() == device && st.mean_abs().device() == device)
    return std::make_shared<const SiteTensors>(SiteTensors{st.H(), st.mean_abs()});
  return st.memo<SiteTensors>("site_tensors/" + std::string(device_name(device)), [&] {
    return std::make_shared<const SiteTensors>(
        SiteTensors{st.H().to(device), st.mean_abs().to(device)});
  });
}

std::unique_ptr<PackedLinear> from_gptq(GptqResult r, InputTransform t) {
  if (!r.perm.empty()) {
    LRQ_ASSERT(!t.find<PermuteStage>());
    t.permute(std::move(r.perm));
  }
  return std::make_unique<PackedLinear>(std::move(r.q), std::move(t), std::vector<LowRankPart>{});
}

namespace {
// Base method, then the modifier stages of the recipe in order.
class Composed final : public Method {
 public:
  Composed(std::unique_ptr<Method> base, const Recipe& r) : base_(std::move(base)), r_(r) {}
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob& job) const override {
    Quantized q = base_->quantize(W, st, job);
    for (size_t k = 1; k < r_.stages.size(); ++k) {
      const Stage& s = r_.stages[k];
      if (s.method != "lr") fail("recipe", "modifier '{}' is not implemented", s.method);
      auto* ql = dynamic_cast<PackedLinear*>(q.layer.get());
      if (!ql) fail(job.layer, "'lr' needs a quantized base layer");
      // The error on W's device (a layer from a CPU-only base is copied there to decode).
      const Tensor Wq =
          ql->device() == W.device() ? ql->dequantize() : ql->to(W.device())->dequantize();
      const Tensor E = difference(W, Wq);
      const auto site = site_tensors(st, W.device());
      Factors f = fit_error_low_rank(E, s.i("rank"), parse_error_weighting(s.s("scale")), site->H,
                                     site->mean_abs);
      std::vector<LowRankPart> parts = ql->low_rank();
      parts.push_back(LowRankPart::from_f32(f.L.to(Device::CPU), f.R.to(Device::CPU), false));
      q.layer = std::make_unique<PackedLinear>(ql->packed(), ql->transform(), std::move(parts));
      q.extra["lr_rank"] = f.R.dim(0);
    }
    return q;
  }
  // The lr stage is device-generic (fit_error_low_rank runs on E's device).
  bool runs_on(Device d) const override {
    return base_->runs_on(d) && (d == Device::CPU || gpu_build());
  }

 private:
  std::unique_ptr<Method> base_;
  Recipe r_;
};
}  // namespace

const std::vector<MethodSpec>& builtin_method_specs();

namespace {
std::map<std::string, MethodEntry>& registry() {
  static std::map<std::string, MethodEntry> r;
  return r;
}
}  // namespace

bool register_method(MethodEntry e) {
  if (!registry().emplace(e.spec.name, e).second) {
    std::fprintf(stderr, "lrquant: method '%s' registered twice\n", e.spec.name.c_str());
    std::abort();
  }
  return true;
}

const std::vector<MethodSpec>& method_specs() {
  // Rebuilt when a registration came after the last call (a test's own method).
  static std::vector<MethodSpec> specs;
  static size_t seen = size_t(-1);
  if (seen != registry().size()) {
    std::vector<std::pair<int, MethodSpec>> all;
    int k = 0;
    for (const auto& s : builtin_method_specs()) all.emplace_back(10 * ++k, s);
    for (const auto& [_, e] : registry()) all.emplace_back(e.order, e.spec);
    std::stable_sort(all.begin(), all.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    specs.clear();
    for (auto& [_, s] : all) specs.push_back(s);
    seen = registry().size();
  }
  return specs;
}

bool is_block_method(const Recipe& r) {
  auto it = registry().find(r.base().method);
  return it != registry().end() && it->second.block;
}

std::unique_ptr<BlockMethod> make_block_method(const Recipe& r) {
  auto it = registry().find(r.base().method);
  if (it == registry().end() || !it->second.block)
    fail("recipe", "method '{}' does not quantize whole blocks", r.base().method);
  if (r.stages.size() > 1)
    fail("recipe", "block method '{}' takes no modifier stages", r.base().method);
  return it->second.block(r.base());
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
  if (auto it = registry().find(r.base().method); it != registry().end()) {
    if (!it->second.layer)
      fail("recipe", "method '{}' quantizes whole blocks, not single layers", r.base().method);
    auto base = it->second.layer(r.base());
    if (r.stages.size() == 1) return base;
    return std::make_unique<Composed>(std::move(base), r);
  }
  using Factory = std::unique_ptr<Method> (*)(const Stage&);
  static const std::map<std::string, Factory> table = {
      {"rtn", make_rtn}, {"gptq", make_gptq}, {"awq", make_awq}, {"nf", make_nf}, {"flrq", make_flrq},
      {"lopro", make_lopro}};
  auto it = table.find(r.base().method);
  if (it == table.end()) fail("recipe", "method '{}' cannot quantize a layer", r.base().method);
  auto base = it->second(r.base());
  if (r.stages.size() == 1) return base;
  return std::make_unique<Composed>(std::move(base), r);
}

}  // namespace lrq
