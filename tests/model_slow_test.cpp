// WikiText-2 perplexity of lab-s, lab-m and lab-mx against the Hugging Face reference (minutes on 2
// cores, hence the slow label).
#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "io/mapped_file.h"
#include "formats/load_model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace lrq {
namespace {

class WikiRef : public ::testing::TestWithParam<std::string> {};

TEST_P(WikiRef, PerplexityMatchesReference) {
  REQUIRE_SHARED();
  // lab-s is embedded in the repository; the others come from ../shared.
  const std::string dir = GetParam() == "lab-s" ? test::repo("models/lab-s")
                                                : test::shared("models/" + GetParam());
  auto ref = nlohmann::json::parse(read_text_file(dir + "/reference.json"))["b_ppl_wiki"];
  auto model = load_model(dir);
  auto tok = load_tokenizer(dir + "/tokenizer.model");
  auto ids = tok->encode(read_text_file(test::shared("data/wikitext-2/wiki.test.raw")), true);
  ASSERT_EQ(int64_t(ids.size()), ref["tokens_total"].get<int64_t>());
  EvalOptions o;
  o.progress = false;
  EvalResult r = evaluate(*model, ids, o);
  EXPECT_EQ(r.tokens, ref["tokens_scored"].get<int64_t>());
  EXPECT_NEAR(r.ppl / ref["ppl"].get<double>(), 1.0, 2e-3);
  EXPECT_NEAR(r.nll, ref["mean_nll"].get<double>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Lab, WikiRef, ::testing::Values("lab-s", "lab-m", "lab-mx"));

}  // namespace
}  // namespace lrq
