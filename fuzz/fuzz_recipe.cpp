// Recipe strings and --layer-recipe PATTERN=RECIPE (the pattern engine included): the input is
// split at the first newline into a recipe and a layer recipe, matched against real layer names.
#include <string_view>

#include "fuzz_util.h"
#include "quant/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nl = in.find('\n');
  const std::string a(in.substr(0, nl)), b(nl == std::string_view::npos ? "" : in.substr(nl + 1));
  lrq::fuzz::expect_clean([&] {
    const lrq::Recipe r = lrq::parse_recipe(a);
    lrq::parse_recipe(r.str());  // what we record must parse again
  });
  lrq::fuzz::expect_clean([&] {
    const lrq::LayerRecipe lr = lrq::parse_layer_recipe(b);
    const lrq::Recipe def = lrq::parse_recipe("rtn:w4g128");
    for (const char* name : {"model.layers.0.self_attn.q_proj", "model.layers.31.mlp.down_proj",
                             "model.layers.7.mlp.gate_proj"})
      lrq::recipe_for(name, def, {lr});
  });
  return 0;
}
