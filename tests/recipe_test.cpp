// Recipe strings: canonical round trip and the errors users see.
#include <utility>

#include "core/error.h"
#include "quant/method.h"
#include "quant/recipe.h"
#include "test_util.h"

namespace lrq {
namespace {

TEST(Recipe, RoundTripsCanonicalStrings) {
  for (const char* s : {"rtn:w4g128", "rtn:w3g128,sym,clip", "gptq:w4g128,act_order",
                        "awq:w4g128", "nf:b4,block64", "gptq:w3g128+lr:r16,scale=diag",
                        "gptq:w2g64,static_groups,damp=0.1", "fp", "rtn:w8"})
    EXPECT_EQ(parse_recipe(s).str(), s);
}

// ggml types by name: the shorthand is the canonical spelling, type=... parses to it, and a
// type fixes the grid, so naming bits, group or sym beside it is refused when the method is made.
TEST(Recipe, GgmlTypesAreSpelledByName) {
  for (const char* s : {"rtn:q4_k", "gptq:q3_k,act_order", "gptq:q2_k+lr:r8", "awq:q4_k",
                        "rtn:q4_0", "flrq:q3_k,residual=gptq", "rtn:clip,q6_k"})
    EXPECT_EQ(parse_recipe(s).str(), s);
  EXPECT_EQ(parse_recipe("gptq:type=q5_k").str(), "gptq:q5_k");
  EXPECT_EQ(parse_recipe("rtn:q4_0").base().s("type"), "q4_0");
  for (const char* bad : {"gptq:q4_k,w3g128", "rtn:q4_0,sym", "flrq:q3_k,asym"}) {
    try {
      make_method(parse_recipe(bad));
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("fixes the grid; drop the option"), std::string::npos)
          << e.what();
    }
  }
  try {
    parse_recipe("rtn:type=q4_2");
    ADD_FAILURE() << "q4_2 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("type='q4_2' is not valid"), std::string::npos)
        << e.what();
  }
}

// FLRQ and LoPRo carry the most options (choices, floats, shorthands among long names): the
// canonical string reparses to the same recipe, and is the declaration-order spelling.
TEST(Recipe, RoundTripsLowRankMethods) {
  const std::pair<const char*, const char*> cases[] = {
      {"flrq:w3g128,residual=gptq,act=0", "flrq:w3g128,residual=gptq,act=0"},
      {"flrq:w2g128,blc=off,rank=8", "flrq:w2g128,r8,blc=off"},
      {"flrq:damp=0.05,act_order,sketch=rsvd,it=3,w3",
       "flrq:w3,sketch=rsvd,it=3,act_order,damp=0.05"},
      {"lopro:w2g128,block64,protect=0,rot=global,factors=fp16",
       "lopro:w2g128,block64,protect=0,rot=global,factors=fp16"},
      {"lopro:w3g128,sym,clip,imp=wdiag,perm=off", "lopro:w3g128,sym,clip,imp=wdiag,perm=off"},
  };
  for (const auto& [s, canonical] : cases) {
    const Recipe r = parse_recipe(s);
    EXPECT_EQ(r.str(), canonical) << s;
    const Recipe again = parse_recipe(r.str());
    ASSERT_EQ(again.stages.size(), r.stages.size()) << s;
    for (size_t k = 0; k < r.stages.size(); ++k) {
      EXPECT_EQ(again.stages[k].method, r.stages[k].method) << s;
      EXPECT_EQ(again.stages[k].given, r.stages[k].given) << s;
    }
  }
}

TEST(Recipe, ReadsOptionsWithDefaults) {
  Recipe r = parse_recipe("gptq:w3g128,act_order+lr:r32,scale=full");
  EXPECT_EQ(r.base().i("bits"), 3);
  EXPECT_EQ(r.base().i("group"), 128);
  EXPECT_TRUE(r.base().flag("act_order"));
  EXPECT_FALSE(r.base().flag("sym"));
  EXPECT_DOUBLE_EQ(r.base().f("damp"), 0.01);
  ASSERT_NE(r.find("lr"), nullptr);
  EXPECT_EQ(r.find("lr")->i("rank"), 32);
  EXPECT_EQ(r.find("lr")->s("scale"), "full");
  // Canonical order is declaration order.
  EXPECT_EQ(parse_recipe("rtn:clip,w4g64").str(), "rtn:w4g64,clip");
}

TEST(Recipe, ErrorsListTheValidChoices) {
  auto msg = [](const std::string& s) {
    try {
      parse_recipe(s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg("foo:w4").find("valid: fp, rtn, gptq"), std::string::npos) << msg("foo:w4");
  EXPECT_NE(msg("rtn:w5g128").find("unsupported bits 5 (valid: 2, 3, 4, 8)"), std::string::npos)
      << msg("rtn:w5g128");
  EXPECT_NE(msg("rtn:w4,bogus").find("unknown option 'bogus'"), std::string::npos);
  EXPECT_NE(msg("gptq:damp=x").find("needs a number"), std::string::npos);
  EXPECT_NE(msg("lr:r4").find("cannot come first"), std::string::npos);
  EXPECT_NE(msg("rtn:w4+gptq:w4").find("only one base method"), std::string::npos);
  EXPECT_NE(msg("nf:b5").find("unsupported bits 5"), std::string::npos) << msg("nf:b5");
  EXPECT_NE(msg("gptq:w4+lr:scale=some").find("valid: none, diag, full"), std::string::npos);
  // Integer options fit the methods' int (a 64-bit value used to wrap to rank 1).
  EXPECT_NE(msg("gptq:w3+lr:rank=4294967297").find("lr: rank 4294967297 is out of range (at most 2147483647)"),
            std::string::npos)
      << msg("gptq:w3+lr:rank=4294967297");
  EXPECT_NE(msg("flrq:w3g128,rank=2147483648").find("out of range"), std::string::npos);
  EXPECT_EQ(parse_recipe("flrq:w3g128,maxrank=2147483647").str(), "flrq:w3g128,maxrank=2147483647");
}

TEST(Recipe, LayerOverridesMatchByRegex) {
  Recipe def = parse_recipe("gptq:w3g128");
  std::vector<LayerRecipe> o = {parse_layer_recipe("down_proj=gptq:w4g128"),
                                parse_layer_recipe("layers\\.0\\..*=fp")};
  EXPECT_EQ(recipe_for("model.layers.3.mlp.down_proj", def, o).str(), "gptq:w4g128");
  EXPECT_EQ(recipe_for("model.layers.0.mlp.down_proj", def, o).str(), "fp");
  EXPECT_EQ(recipe_for("model.layers.3.mlp.up_proj", def, o).str(), "gptq:w3g128");
  EXPECT_THROW(parse_layer_recipe("nonsense"), Error);
  EXPECT_THROW(parse_layer_recipe("([=rtn:w4"), Error);
}

}  // namespace
}  // namespace lrq

namespace lrq {
// Every error is one line, whatever the input it quotes (found by fuzz_recipe: a layer recipe
// holding a newline printed a two-line error).
TEST(Recipe, ErrorsQuotingControlCharactersStayOneLine) {
  try {
    parse_layer_recipe("(a*\nb)\t\x01");
    FAIL() << "accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_NE(m.find("got '(a*\\nb)\\t\\x01'"), std::string::npos) << m;
  }
  try {
    parse_recipe(std::string(100000, 'x'));
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_LE(std::string(e.what()).size(), 4003u);
  }
}
}  // namespace lrq
