#include "quant/recipe.h"

#include "core/pattern.h"

#include <optional>
#include <cmath>
#include <limits>
#include <regex>

#include "core/error.h"

namespace lrq {

namespace {

// The whole of `v` as a finite double (std::stod alone accepts a prefix, "inf" and "nan").
std::optional<double> finite_number(const std::string& v) {
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (pos != v.size() || v.empty() || !std::isfinite(x)) return std::nullopt;
  return x;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

const OptionSpec* find_option(const MethodSpec& m, const std::string& key) {
  for (const auto& o : m.options)
    if (o.key == key) return &o;
  return nullptr;
}

std::vector<std::string> option_names(const MethodSpec& m) {
  std::vector<std::string> v;
  for (const auto& o : m.options) v.push_back(o.key);
  return v;
}

std::vector<std::string> split(const std::string& s, char c) {
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == c) {
      out.push_back(s.substr(b, i - b));
      b = i + 1;
    }
  return out;
}

// Normalizes and checks one value against its spec; returns the canonical text.
std::string check_value(const std::string& where, const MethodSpec& m, const OptionSpec& o,
                        const std::string& v) {
  switch (o.kind) {
    case OptionSpec::Int: {
      size_t pos = 0;
      long long x = 0;
      try {
        x = std::stoll(v, &pos);
      } catch (const std::exception&) {
        pos = 0;
      }
      if (pos != v.size() || v.empty())
        fail(where, "{}: option {} needs an integer, got '{}'", m.name, o.key, v);
      if (!o.choices.empty() &&
          std::find(o.choices.begin(), o.choices.end(), std::to_string(x)) == o.choices.end())
        fail(where, "{}: unsupported {} {} (valid: {})", m.name, o.key, x, join(o.choices));
      if (o.choices.empty() && x < 0) fail(where, "{}: {} must be >= 0, got {}", m.name, o.key, x);
      // Methods keep integer options in int: a wider value would wrap (issue 25: rank=4294967297
      // ran rank 1 and was recorded as r4294967297).
      if (x > std::numeric_limits<int32_t>::max())
        fail(where, "{}: {} {} is out of range (at most {})", m.name, o.key, x,
             std::numeric_limits<int32_t>::max());
      return std::to_string(x);
    }
    case OptionSpec::Float: {
      if (!finite_number(v)) fail(where, "{}: option {} needs a number, got '{}'", m.name, o.key, v);
      return v;
    }
    case OptionSpec::Flag:
      if (v == "1" || v == "true" || v == "on") return "1";
      if (v == "0" || v == "false" || v == "off") return "0";
      fail(where, "{}: flag {} takes no value or on/off, got '{}'", m.name, o.key, v);
    case OptionSpec::Choice:
      if (std::find(o.choices.begin(), o.choices.end(), v) == o.choices.end())
        fail(where, "{}: {}='{}' is not valid (valid: {})", m.name, o.key, v, join(o.choices));
      return v;
  }
  return v;
}

// The common activation options (recipe.h: ActivationSpec), checked here for every method.
// Returns false when `opt` is none of them.
bool parse_activation_option(const std::string& opt, const std::string& where,
                             const std::string& method, ActivationSpec* act) {
  const size_t eq = opt.find('=');
  const std::string key = opt.substr(0, eq);
  const bool has_value = eq != std::string::npos;
  const std::string v = has_value ? opt.substr(eq + 1) : "";
  if (key != "a8" && key != "kv8" && key != "smooth") return false;
  if (!act)
    fail(where, "{}: {} applies to the whole model's activations; write it in the base stage "
         "of --recipe (e.g. rtn:w4,{})", method, key, opt);
  if (key == "a8") {
    if (act->a8 != ActivationSpec::A8::Off) fail(where, "{}: option a8 given twice", method);
    if (!has_value || v == "token") act->a8 = ActivationSpec::A8::Token;
    else if (v == "tensor") act->a8 = ActivationSpec::A8::Tensor;
    else fail(where, "{}: a8='{}' is not valid (valid: a8, a8=token, a8=tensor)", method, v);
  } else if (key == "kv8") {
    if (act->kv8) fail(where, "{}: option kv8 given twice", method);
    if (has_value && v != "on" && v != "1" && v != "true") {
      if (v == "off" || v == "0" || v == "false") return true;
      fail(where, "{}: flag kv8 takes no value or on/off, got '{}'", method, v);
    }
    act->kv8 = true;
  } else {
    if (act->smooth >= 0) fail(where, "{}: option smooth given twice", method);
    if (!has_value) fail(where, "{}: option smooth needs a value (smooth=0.5)", method);
    const std::optional<double> parsed = finite_number(v);
    if (!parsed) fail(where, "{}: option smooth needs a number, got '{}'", method, v);
    const double x = *parsed;
    if (x < 0 || x > 1)
      fail(where, "{}: smooth={} is outside [0, 1] (the migration exponent alpha)", method, v);
    act->smooth = x;
    act->smooth_text = v;
  }
  return true;
}

Stage parse_stage(const std::string& text, const std::string& where, ActivationSpec* act) {
  Stage st;
  size_t colon = text.find(':');
  st.method = text.substr(0, colon);
  if (st.method.empty()) fail(where, "empty method in recipe '{}'", text);
  const MethodSpec& m = method_spec(st.method);
  if (colon == std::string::npos) return st;
  std::smatch mt;
  static const std::regex wg(R"(w(\d+)(?:g(\d+))?)"), bb(R"(b(\d+))"), blk(R"(block(\d+))"),
      rr(R"(r(\d+))"), ggml(R"(q\d_[01k])");
  auto set = [&](const std::string& key, const std::string& v) {
    const OptionSpec* o = find_option(m, key);
    if (!o)
      fail(where, "{}: unknown option '{}' (valid: {})", m.name, key, join(option_names(m)));
    if (st.given.count(key)) fail(where, "{}: option {} given twice", m.name, key);
    st.given[key] = check_value(where, m, *o, v);
  };
  for (const std::string& opt : split(text.substr(colon + 1), ',')) {
    if (opt.empty()) fail(where, "{}: empty option in '{}'", m.name, text);
    if (!find_option(m, opt.substr(0, opt.find('='))) &&
        parse_activation_option(opt, where, m.name, m.is_modifier ? nullptr : act))
      continue;
    size_t eq = opt.find('=');
    if (eq != std::string::npos) {
      set(opt.substr(0, eq), opt.substr(eq + 1));
    } else if (std::regex_match(opt, mt, wg) && find_option(m, "bits")) {
      set("bits", mt[1]);
      if (mt[2].matched) set("group", mt[2]);
    } else if (std::regex_match(opt, mt, bb) && find_option(m, "bits")) {
      set("bits", mt[1]);
    } else if (std::regex_match(opt, mt, blk) && find_option(m, "block")) {
      set("block", mt[1]);
    } else if (std::regex_match(opt, mt, rr) && find_option(m, "rank")) {
      set("rank", mt[1]);
    } else if (std::regex_match(opt, mt, ggml) && find_option(m, "type")) {
      set("type", opt);
    } else {
      const OptionSpec* o = find_option(m, opt);
      if (!o)
        fail(where, "{}: unknown option '{}' (valid: {})", m.name, opt, join(option_names(m)));
      if (o->kind != OptionSpec::Flag)
        fail(where, "{}: option {} needs a value ({}=...)", m.name, opt, opt);
      set(opt, "1");
    }
  }
  return st;
}

const OptionSpec& spec_of(const Stage& st, const std::string& key) {
  const OptionSpec* o = find_option(method_spec(st.method), key);
  if (!o) fail("recipe", "{} has no option {}", st.method, key);
  return *o;
}

}  // namespace

const MethodSpec& method_spec(const std::string& name) {
  for (const auto& m : method_specs())
    if (m.name == name) return m;
  std::vector<std::string> names;
  for (const auto& m : method_specs()) names.push_back(m.name);
  fail("recipe", "unknown method '{}' (valid: {})", name, join(names));
}

std::string Stage::s(const std::string& key) const {
  auto it = given.find(key);
  return it != given.end() ? it->second : spec_of(*this, key).def;
}
int64_t Stage::i(const std::string& key) const { return std::stoll(s(key)); }
double Stage::f(const std::string& key) const { return std::stod(s(key)); }
bool Stage::flag(const std::string& key) const {
  std::string v = s(key);
  return v == "1";
}

std::string Stage::str() const {
  const MethodSpec& m = method_spec(method);
  std::vector<std::string> parts;
  for (const auto& o : m.options) {
    auto it = given.find(o.key);
    if (it == given.end()) continue;
    if (o.key == "bits") {
      bool wg = find_option(m, "group") != nullptr;
      std::string p = (wg ? "w" : "b") + it->second;
      if (wg && has("group")) p += "g" + given.at("group");
      parts.push_back(p);
    } else if (o.key == "group" && has("bits")) {
      continue;  // printed with bits
    } else if (o.key == "type" && std::regex_match(it->second, std::regex(R"(q\d_[01k])"))) {
      parts.push_back(it->second);  // the ggml type's name alone
    } else if (o.key == "block" || o.key == "rank") {
      parts.push_back((o.key == "block" ? "block" : "r") + it->second);
    } else if (o.kind == OptionSpec::Flag) {
      parts.push_back(it->second == "1" ? o.key : o.key + "=off");
    } else {
      parts.push_back(o.key + "=" + it->second);
    }
  }
  std::string s = method;
  for (size_t k = 0; k < parts.size(); ++k) s += (k ? "," : ":") + parts[k];
  return s;
}

const Stage* Recipe::find(const std::string& method) const {
  for (size_t k = 1; k < stages.size(); ++k)
    if (stages[k].method == method) return &stages[k];
  return nullptr;
}

std::string ActivationSpec::str() const {
  std::string s;
  auto add = [&](const std::string& p) { s += (s.empty() ? "" : ",") + p; };
  if (a8 == A8::Token) add("a8");
  if (a8 == A8::Tensor) add("a8=tensor");
  if (kv8) add("kv8");
  if (smooth >= 0) add("smooth=" + smooth_text);
  return s;
}

const std::vector<OptionSpec>& activation_option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"a8", OptionSpec::Choice, "off",
       "8-bit inputs of all seven projections: per token, dynamic asymmetric (a8 = a8=token), "
       "or one static symmetric step per projection input from calibration (a8=tensor)",
       {"token", "tensor"}},
      {"kv8", OptionSpec::Flag, "",
       "8-bit keys (after RoPE) and values, per token and KV head, dynamic asymmetric"},
      {"smooth", OptionSpec::Float, "off",
       "SmoothQuant: s_j = max|X_j|^alpha / max|W_j|^(1-alpha) folded into the norms and the "
       "v/up projections before quantizing; alpha in [0, 1]"}};
  return specs;
}

std::string Recipe::str(bool with_activations) const {
  std::string s;
  for (const auto& st : stages) s += (s.empty() ? "" : "+") + st.str();
  const std::string a = with_activations ? act.str() : "";
  if (a.empty()) return s;
  // After the base stage's own options, before any modifier stage.
  const std::string base = stages.front().str();
  const std::string rest = s.substr(base.size());
  return base + (base.find(':') == std::string::npos ? ":" : ",") + a + rest;
}

Recipe parse_recipe(const std::string& text, const std::string& where) {
  if (text.empty()) fail(where, "empty recipe");
  Recipe r;
  for (const std::string& part : split(text, '+'))
    r.stages.push_back(parse_stage(part, where, &r.act));
  if (method_spec(r.stages[0].method).is_modifier)
    fail(where, "'{}' modifies a base method and cannot come first (e.g. gptq:w3g128+{})",
         r.stages[0].method, r.stages[0].str());
  for (size_t k = 1; k < r.stages.size(); ++k) {
    if (!method_spec(r.stages[k].method).is_modifier)
      fail(where, "only one base method per recipe; '{}' follows '{}'", r.stages[k].method,
           r.stages[0].method);
    for (size_t j = 1; j < k; ++j)
      if (r.stages[j].method == r.stages[k].method)
        fail(where, "stage '{}' given twice", r.stages[k].method);
  }
  return r;
}

LayerRecipe parse_layer_recipe(const std::string& text) {
  size_t eq = text.rfind('=', text.find(':') == std::string::npos ? std::string::npos
                                                                   : text.find(':'));
  // The regex may contain '='; the recipe's method name may not. Split at the last '='
  // before the recipe's ':'.
  if (eq == std::string::npos || eq == 0)
    fail("--layer-recipe", "expected REGEX=RECIPE, got '{}'", text);
  LayerRecipe lr;
  lr.pattern = text.substr(0, eq);
  Pattern(lr.pattern, "--layer-recipe");  // an Error naming the problem if it does not compile
  lr.recipe = parse_recipe(text.substr(eq + 1), "--layer-recipe");
  if (lr.recipe.act.any())
    fail("--layer-recipe", "'{}': {} applies to the whole model; give it in --recipe", text,
         lr.recipe.act.str());
  return lr;
}

const Recipe& recipe_for(const std::string& layer, const Recipe& def,
                         const std::vector<LayerRecipe>& overrides) {
  const Recipe* r = &def;
  for (const auto& o : overrides)
    if (Pattern(o.pattern, "--layer-recipe").search(layer)) r = &o.recipe;
  return *r;
}

}  // namespace lrq
