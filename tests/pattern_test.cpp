// --layer-recipe patterns: the NFA matcher agrees with std::regex (ECMAScript, regex_search) on
// the supported syntax over real layer names, and the inputs that broke std::regex (deep
// nesting, catastrophic backtracking) are an error or finish at once.
#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/pattern.h"

using namespace lrq;

namespace {

std::vector<std::string> layer_names() {
  std::vector<std::string> v;
  for (int l : {0, 1, 9, 10, 31})
    for (const char* p : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
      v.push_back("model.layers." + std::to_string(l) + "." + p);
  v.push_back("lm_head");
  v.push_back("");
  return v;
}

}  // namespace

TEST(Pattern, AgreesWithStdRegexOnTheSupportedSyntax) {
  const std::vector<std::string> patterns = {
      "down_proj", "layers\\.0\\..*", "^model\\.layers\\.[0-9]\\.", "layers\\.(0|1|31)\\.mlp",
      "(q|k|v)_proj$", "\\d\\d\\.", "layers\\.\\d+\\.self_attn\\.[^q]_proj", "^lm_head$",
      "up|down", "(?:gate|up)_proj", "x*", "^$", "a{2}", "l{2}", "la{1,3}y", "r{0,}s",
      "[a-c]_proj", "[\\w]+_proj$", "\\.\\s*1", "o_?proj", "(mlp|attn)+", "((a|b)*c)*d|proj",
      "layers\\.[12][0-9]?\\.", "proj$|^model", "[-.]", "\\W", "9\\.[^.]*\\.q"};
  for (const std::string& p : patterns) {
    const Pattern ours(p);
    const std::regex ref(p);
    for (const std::string& name : layer_names())
      EXPECT_EQ(ours.search(name), std::regex_search(name, ref)) << "'" << p << "' on '" << name << "'";
  }
}

TEST(Pattern, UnsupportedOrMalformedPatternsAreErrorsNamingThePosition) {
  auto msg = [](const std::string& p) -> std::string {
    try {
      Pattern x(p, "--layer-recipe");
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(msg("(a").find("unbalanced '('"), std::string::npos) << msg("(a");
  EXPECT_NE(msg("a)").find("unbalanced ')' at position 1"), std::string::npos) << msg("a)");
  EXPECT_NE(msg("*a").find("nothing to repeat"), std::string::npos);
  EXPECT_NE(msg("(a)\\1").find("unsupported escape \\1"), std::string::npos) << msg("(a)\\1");
  EXPECT_NE(msg("(?=a)").find("lookaround"), std::string::npos);
  EXPECT_NE(msg("a*?").find("lazy"), std::string::npos);
  EXPECT_NE(msg("[abc").find("unterminated '['"), std::string::npos);
  EXPECT_NE(msg("a{3,1}").find("m < n"), std::string::npos);
  EXPECT_NE(msg("a{1000}").find("above 100"), std::string::npos);
  EXPECT_NE(msg("(a{100}){100}{100}").find("more than 20000 steps"), std::string::npos)
      << msg("(a{100}){100}{100}");
  EXPECT_EQ(msg("--layer-recipe").find("invalid"), std::string::npos);  // plain text is fine
}

// The reproducers of issue 25: 20k nested groups overflowed std::regex's stack; (a*)*b and
// friends never finished on a 40-character name. Both are now immediate.
TEST(Pattern, HostileInputsAreBoundedInTimeAndStack) {
  const std::string deep = std::string(20000, '(') + "a" + std::string(20000, ')');
  EXPECT_THROW(Pattern p(deep), Error);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string name(40, 'a');
  EXPECT_FALSE(Pattern("(a*)*b").search(name));
  EXPECT_FALSE(Pattern("(a|a)*(a|aa)*(a+)+b").search(name + "c"));
  EXPECT_TRUE(Pattern("(a*)*$").search(name));
  EXPECT_THROW(Pattern p(std::string(5000, 'a') + std::string(20000, '*')), Error);
  // A generous bound: linear matching takes microseconds; the backtracking took forever.
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}
