#include <cstdio>

#include "cli/common.h"
#include "quant/recipe.h"

namespace lrq::cli {

Command add_recipes(CLI::App& app) {
  auto* sub = app.add_subcommand("recipes", "List the quantization methods and their options");
  return {sub, [] {
            auto print_option = [](const OptionSpec& o) {
              std::string d = o.kind == OptionSpec::Flag ? "flag" : "default " + o.def;
              std::string c;
              for (const auto& x : o.choices) c += (c.empty() ? " {" : ",") + x;
              if (!c.empty()) c += "}";
              std::printf("    %-14s %-14s %s%s\n", o.key.c_str(), d.c_str(), o.help.c_str(),
                          c.c_str());
            };
            for (const auto& m : method_specs()) {
              std::printf("%s%s\n    %s\n", m.name.c_str(),
                          m.is_modifier ? "  (modifier)" : "", m.help.c_str());
              if (m.is_modifier) std::printf("    use after a base method, e.g. gptq:w3g128+%s:...\n", m.name.c_str());
              for (const auto& o : m.options) print_option(o);
            }
            std::printf("activations  (every base method)\n    whole-model activation options, "
                        "e.g. rtn:w4,a8,kv8 or rtn:w8,a8=tensor,smooth=0.5\n");
            for (const auto& o : activation_option_specs()) print_option(o);
          }};
}

}  // namespace lrq::cli
