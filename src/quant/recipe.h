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

struct Recipe {
  std::vector<Stage> stages;
  const Stage& base() const { return stages.front(); }
  /// The modifier stage named `method`, or null.
  const Stage* find(const std::string& method) const;
  std::string str() const;
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
