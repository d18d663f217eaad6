// Recipe strings: the one place where "gptq:w3g128,act_order+lr:r16,scale=diag" becomes a
// structure and back.
//
// Grammar:  recipe := stage ('+' stage)* ;  stage := method [':' option (',' option)*]
//           option := key '=' value | flag | shorthand
// Shorthands: wB[gG] (bits B, group G), bB (bits), blockN, rN (rank). Every method declares its
// options (name, kind, default, help) in its own file (quant/methods/), so unknown names get an
// error listing the valid ones, and printing is canonical: the options given, in declaration
// order, shorthands where they exist.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lrq {

struct OptionSpec {
  enum Kind { Int, Float, Flag, Choice };
  std::string key;
  Kind kind;
  std::string def;                   // default as text ("" for flags: off)
  std::string help;
  std::vector<std::string> choices = {};  // Choice: the valid values; Int: allowed values if set
};

struct MethodSpec {
  std::string name;
  std::string help;
  std::vector<OptionSpec> options;
  bool is_modifier = false;  // a stage that follows a base method ("lr")
};

/// Every known method and stage, in the order the help lists them.
const std::vector<MethodSpec>& method_specs();
const MethodSpec& method_spec(const std::string& name);  // Error listing valid names

struct Stage {
  std::string method;
  std::map<std::string, std::string> given;  // options as written (normalized values)

  bool has(const std::string& key) const { return given.count(key) != 0; }
  int64_t i(const std::string& key) const;
  double f(const std::string& key) const;
  bool flag(const std::string& key) const;
  std::string s(const std::string& key) const;
  std::string str() const;
};

/// Options every base method understands, about activations rather than weights; they apply
/// to the whole model (so --layer-recipe refuses them) and are written in the base stage:
/// `a8` (= a8=token) per-token dynamic 8-bit inputs of all seven projections, `a8=tensor` one
/// static 8-bit step per projection input from calibration, `kv8` per-token 8-bit keys and
/// values, `smooth=ALPHA` SmoothQuant's migration s_j = max|X_j|^a / max|W_j|^(1-a) folded into
/// the weights before the method quantizes them (docs/RECIPES.md, "Activations").
struct ActivationSpec {
  enum class A8 : uint8_t { Off, Token, Tensor };
  A8 a8 = A8::Off;
  bool kv8 = false;
  double smooth = -1;       // alpha in [0, 1]; < 0: off
  std::string smooth_text;  // alpha as written (printed back unchanged)
  bool any() const { return a8 != A8::Off || kv8 || smooth >= 0; }
  /// "a8,kv8,smooth=0.5" (canonical order), "" when none.
  std::string str() const;
};
/// The common options' table, for `lrquant recipes`.
const std::vector<OptionSpec>& activation_option_specs();

struct Recipe {
  std::vector<Stage> stages;
  ActivationSpec act;  // given in the base stage
  const Stage& base() const { return stages.front(); }
  /// The modifier stage named `method`, or null.
  const Stage* find(const std::string& method) const;
  /// The recipe as text, activation options after the base stage's own; without them when
  /// `with_activations` is false (the weights' recipe alone).
  std::string str(bool with_activations = true) const;
};

/// Parses and validates a recipe. `where` names its origin for errors ("--recipe").
Recipe parse_recipe(const std::string& text, const std::string& where = "--recipe");

/// A per-layer override: layers whose full name matches `pattern` (core/pattern.h: a linear-time
/// regular-expression subset, searched)
/// use `recipe`. Parsed from "REGEX=RECIPE".
struct LayerRecipe {
  std::string pattern;
  Recipe recipe;
};
LayerRecipe parse_layer_recipe(const std::string& text);
/// The recipe for a layer: the last matching override, else the default.
const Recipe& recipe_for(const std::string& layer, const Recipe& def,
                         const std::vector<LayerRecipe>& overrides);

}  // namespace lrq
