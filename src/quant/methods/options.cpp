#include "quant/methods/options.h"

#include <algorithm>

namespace lrq {

namespace {
using K = OptionSpec;
// Built on each call, not held in a namespace-scope table: the registrars of other files call
// these during static initialization, in no defined order.
std::vector<std::string> bit_widths() { return {"2", "3", "4", "8"}; }
}  // namespace

std::vector<OptionSpec> grid_option_specs() {
  return {{"bits", K::Int, "4", "code width (wB shorthand)", bit_widths()},
          {"group", K::Int, "0", "input columns per scale group, 0 = one group per row (wBgG)"},
          {"sym", K::Flag, "", "symmetric grid (no stored zero point)"},
          {"clip", K::Flag, "", "search a shrink of each group's range minimizing the "
                                "diag(H)-weighted error (K-quants: weight their scale fit by "
                                "diag(H))"},
          {"type", K::Choice, "none",
           "a ggml type's grid, exported bit for bit (q4_0 = w4g32,sym, q4_1 = w4g32, q8_0 = "
           "w8g32,sym; q2_k..q6_k: K-quant super-blocks; shorthand: the name alone)",
           {"none", "q4_0", "q4_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"}}};
}

GridChoice parse_grid_choice(const Stage& s) {
  RtnOptions o;
  o.bits = int(s.i("bits"));
  o.group = s.i("group");
  o.symmetric = s.flag("sym");
  o.clip_search = s.flag("clip");
  return with_grid_type(s, o);
}

GridChoice with_grid_type(const Stage& s, const RtnOptions& grid) {
  GridChoice c;
  c.grid = grid;
  c.weigh_by_h = grid.clip_search;
  RtnOptions& o = c.grid;
  // Methods that pick the grid options without `type` (lopro) never name one.
  const std::string type = s.has("type") ? s.s("type") : "none";
  if (type == "none") return c;
  for (const char* k : {"bits", "group", "sym", "asym"})
    if (s.has(k))
      fail("recipe", "{}: type {} fixes the grid; drop the option {}", s.method, type, k);
  // A ggml 32-value block type as a uniform grid, or a K-quant's stand-in (GridChoice).
  struct Uniform {
    const char* type;
    int bits;
    bool sym;
    gguf::Type kquant;
  };
  static const Uniform table[] = {
      {"q4_0", 4, true, gguf::Type::F32},  {"q4_1", 4, false, gguf::Type::F32},
      {"q8_0", 8, true, gguf::Type::F32},  {"q2_k", 4, true, gguf::Type::Q2_K},
      {"q3_k", 4, true, gguf::Type::Q3_K}, {"q4_k", 4, false, gguf::Type::Q4_K},
      {"q5_k", 8, true, gguf::Type::Q5_K}, {"q6_k", 8, true, gguf::Type::Q6_K}};
  for (const Uniform& u : table)
    if (type == u.type) {
      o.bits = u.bits;
      o.group = 32;
      o.symmetric = u.sym;
      if (u.kquant != gguf::Type::F32) {
        c.kquant = u.kquant;
        o.clip_search = true;  // the stand-in searches its range as the K-quant fit does
      }
    }
  return c;
}

RtnOptions parse_grid_options(const Stage& s) { return parse_grid_choice(s).grid; }

std::vector<OptionSpec> gptq_option_specs() {
  return {{"act_order", K::Flag, "", "quantize columns by decreasing diag(H)"},
          {"static_groups", K::Flag, "", "group scales from the original weights, up front"},
          {"damp", K::Float, "0.01", "diagonal damping, a fraction of mean diag(H)"},
          {"blocksize", K::Int, "128", "lazy-update block width"}};
}

GptqOptions parse_gptq_options(const Stage& s) {
  GptqOptions o;
  o.grid = parse_grid_options(s);
  o.act_order = s.flag("act_order");
  o.static_groups = s.flag("static_groups");
  o.damp = s.f("damp");
  o.block = s.i("blocksize");
  if (o.block <= 0) fail("recipe", "{}: blocksize must be positive", s.method);
  return o;
}

std::vector<OptionSpec> flex_option_specs() {
  return {{"act", K::Float, "0.5",
           "activation-scaling exponent: R1-FLR runs on W diag(mean|x|^act)"},
          {"sketch", K::Choice, "r1", "low-rank primitive", {"r1", "block", "rsvd", "svd"}},
          {"it", K::Int, "2", "power iterations of the sketch"},
          {"x", K::Float, "0.2", "R1-FLR: stop when storage growth k > 1 + x"},
          {"flat", K::Float, "0.001", "R1-FLR: stop when the mean relative amax drop over the "
                                      "last 4 ranks is below this"},
          {"rank", K::Int, "0", "fixed rank instead of R1-FLR (0: flexible)"},
          {"maxrank", K::Int, "256", "upper bound on the flexible rank"}};
}

FlexRankOptions parse_flex_options(const Stage& s) {
  FlexRankOptions o;
  o.bits = double(s.i("bits"));
  o.x = s.f("x");
  o.flat = s.f("flat");
  o.act = s.f("act");
  o.fixed_rank = int(s.i("rank"));
  o.max_rank = int(s.i("maxrank"));
  using M = LowRankMethod;
  o.spec.method = choice<M>(s, "sketch", {M::R1, M::Block, M::Rsvd, M::Svd});
  // `it` is the sketch's power iterations (rsvd's q); an exact SVD has none and keeps the
  // spec's defaults. The cap is LowRankSpec's, against a typo asking for hours of work.
  if (o.spec.method != M::Svd) {
    const int64_t it = s.i("it");
    if (it > 64) fail("recipe", "{}: it must be at most 64, got {}", s.method, it);
    o.spec.iters = int(it);
  }
  return o;
}

std::vector<OptionSpec> pick(const std::vector<OptionSpec>& group,
                             std::initializer_list<Pick> keys) {
  std::vector<OptionSpec> out;
  for (const Pick& p : keys) {
    auto it = std::find_if(group.begin(), group.end(),
                           [&](const auto& o) { return o.key == p.key; });
    LRQ_ASSERT(it != group.end());
    out.push_back(*it);
    if (p.help) out.back().help = *p.help;
    if (p.def) out.back().def = *p.def;
  }
  return out;
}

std::vector<OptionSpec> cat(std::initializer_list<std::vector<OptionSpec>> parts) {
  std::vector<OptionSpec> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

size_t choice_index(const Stage& s, std::string_view key) {
  const MethodSpec& m = method_spec(s.method);
  auto o = std::find_if(m.options.begin(), m.options.end(),
                        [&](const auto& x) { return x.key == key; });
  LRQ_ASSERT(o != m.options.end() && o->kind == OptionSpec::Choice);
  const std::string v = s.s(std::string(key));
  auto c = std::find(o->choices.begin(), o->choices.end(), v);
  LRQ_ASSERT(c != o->choices.end());
  return size_t(c - o->choices.begin());
}

}  // namespace lrq
