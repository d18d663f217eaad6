// The bits-per-weight budget (issue 24): the multiple-choice knapsack solver against exhaustive
// search, its bound when the DP cannot run at full resolution, and the errors users see.
#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "quant/allocate.h"
#include "quant/budget.h"
#include "test_util.h"

namespace lrq {
namespace {

using Items = std::vector<std::vector<BudgetOption>>;

struct Best {
  double cost = 0;
  uint64_t bytes = 0;
  bool found = false;
};

// Every combination; the cost summed in item order from 0, as the solver reports it, so the
// optimum can be compared exactly.
Best exhaustive(const Items& items, uint64_t budget) {
  Best best;
  std::vector<size_t> k(items.size(), 0);
  for (;;) {
    double c = 0;
    uint64_t b = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      c += items[i][k[i]].cost;
      b += items[i][k[i]].bytes;
    }
    if (b <= budget && (!best.found || c < best.cost)) best = {c, b, true};
    size_t i = 0;
    while (i < items.size() && ++k[i] == items[i].size()) k[i++] = 0;
    if (i == items.size()) return best;
  }
}

double cost_of(const Items& items, const std::vector<int>& pick) {
  double c = 0;
  for (size_t i = 0; i < items.size(); ++i) c += items[i][size_t(pick[i])].cost;
  return c;
}
uint64_t bytes_of(const Items& items, const std::vector<int>& pick) {
  uint64_t b = 0;
  for (size_t i = 0; i < items.size(); ++i) b += items[i][size_t(pick[i])].bytes;
  return b;
}

// Random instances shaped like the real problem: bytes grow with the option's quality and
// error falls, with noise, so hulls are non-trivial, plus some dominated options, equal bytes
// and equal costs (integer costs) to exercise the tie rules.
Items random_instance(std::mt19937_64& rng, size_t n, size_t m, uint64_t byte_scale,
                      bool integer_costs) {
  std::uniform_int_distribution<uint64_t> bytes(1, 12);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uniform_int_distribution<int> icost(0, 9);
  Items items(n);
  for (auto& it : items)
    for (size_t k = 0; k < m; ++k) {
      BudgetOption o;
      o.bytes = bytes(rng) * byte_scale;
      o.cost = integer_costs ? double(icost(rng)) : std::exp(-0.3 * double(o.bytes) / double(byte_scale)) * (0.5 + u(rng));
      it.push_back(o);
    }
  return items;
}

uint64_t max_bytes(const Items& items) {
  uint64_t b = 0;
  for (const auto& it : items) {
    uint64_t m = 0;
    for (const auto& o : it) m = std::max(m, o.bytes);
    b += m;
  }
  return b;
}

// The optimum of many small instances: the solver's cost equals exhaustive search's, exactly,
// and it says so (exact), within the budget, above its own LP bound.
TEST(Budget, MatchesExhaustiveSearchOnSmallInstances) {
  std::mt19937_64 rng(24);
  int constrained = 0;
  for (int t = 0; t < 600; ++t) {
    const size_t n = 1 + size_t(t % 6), m = 1 + size_t((t / 6) % 5);
    const uint64_t scale = (t % 3 == 0) ? 1 : (t % 3 == 1) ? 4096 : 98304 + 7;
    const Items items = random_instance(rng, n, m, scale, t % 4 == 3);
    const uint64_t lo = min_budget_bytes(items), hi = max_bytes(items);
    std::uniform_int_distribution<uint64_t> pickb(lo, hi);
    const uint64_t budget = pickb(rng);
    const Best want = exhaustive(items, budget);
    ASSERT_TRUE(want.found);
    const BudgetSolution s = solve_budget(items, budget);
    SCOPED_TRACE("instance " + std::to_string(t) + " n=" + std::to_string(n) + " m=" +
                 std::to_string(m) + " budget=" + std::to_string(budget) + " how=" + s.how);
    ASSERT_EQ(s.pick.size(), n);
    EXPECT_EQ(s.cost, want.cost);
    EXPECT_EQ(s.cost, cost_of(items, s.pick));
    EXPECT_EQ(s.bytes, bytes_of(items, s.pick));
    EXPECT_LE(s.bytes, budget);
    EXPECT_TRUE(s.exact);
    EXPECT_LE(s.lower_bound, want.cost + 1e-12 * std::abs(want.cost));
    constrained += s.how != "unconstrained";
  }
  // Most draws must bind (a fifth have one option per item and cannot), or the test would
  // only check the trivial case.
  EXPECT_GT(constrained, 300);
}

// Without the DP (or with a table too small for full resolution) the answer is not proven
// optimal; what is proven: lower_bound <= optimum <= cost, and cost - lower_bound is at most
// the cost span of one item (the LP optimum differs from the greedy prefix by part of one
// upgrade step, and the fill only lowers the cost).
TEST(Budget, LagrangianPathStaysWithinItsBound) {
  std::mt19937_64 rng(7);
  int strictly_worse = 0;
  for (int t = 0; t < 400; ++t) {
    const size_t n = 2 + size_t(t % 5), m = 2 + size_t(t % 4);
    const Items items = random_instance(rng, n, m, 1000 + uint64_t(t), false);
    std::uniform_int_distribution<uint64_t> pickb(min_budget_bytes(items), max_bytes(items));
    const uint64_t budget = pickb(rng);
    const Best want = exhaustive(items, budget);
    double span = 0;
    for (const auto& it : items) {
      double lo = it[0].cost, hi = it[0].cost;
      for (const auto& o : it) lo = std::min(lo, o.cost), hi = std::max(hi, o.cost);
      span = std::max(span, hi - lo);
    }
    for (const bool use_dp : {false, true}) {
      BudgetSolverOptions opt;
      opt.use_dp = use_dp;
      opt.max_dp_cells = 4 * n;  // forces a coarse unit when the DP runs
      const BudgetSolution s = solve_budget(items, budget, opt);
      SCOPED_TRACE("instance " + std::to_string(t) + (use_dp ? " dp-rounded" : " lagrange"));
      EXPECT_LE(s.bytes, budget);
      EXPECT_GE(s.cost, want.cost - 1e-12);
      EXPECT_LE(s.lower_bound, want.cost + 1e-12);
      EXPECT_LE(s.cost - s.lower_bound, span + 1e-12);
      if (!use_dp) {
        EXPECT_TRUE(s.how == "lagrange" || s.how == "unconstrained") << s.how;
      }
      strictly_worse += s.cost > want.cost;
    }
  }
  // The heuristic path is not always optimal: this instance set must show it, or the exact
  // test above proves nothing the greedy would not.
  EXPECT_GT(strictly_worse, 0);
}

// A hand-made instance where greedy by efficiency is wrong: item 0's upgrade is the most
// efficient but blocks item 1's larger, better one.
TEST(Budget, BeatsEfficiencyGreedyOnAKnownInstance) {
  const Items items = {
      {{10, 10.0}, {12, 7.0}},   // 1.5 per byte
      {{10, 10.0}, {20, 0.0}},   // 1.0 per byte
  };
  const BudgetSolution s = solve_budget(items, 30);
  EXPECT_EQ(s.pick, (std::vector<int>{0, 1}));
  EXPECT_EQ(s.cost, 10.0);
  EXPECT_EQ(s.bytes, 30u);
  EXPECT_TRUE(s.exact);
  // The LP bound: take item 0's step (2 bytes, -3) and 8/10 of item 1's (-8): 20 - 11 = 9.
  EXPECT_DOUBLE_EQ(s.lower_bound, 9.0);
  BudgetSolverOptions no_dp;
  no_dp.use_dp = false;
  const BudgetSolution g = solve_budget(items, 30, no_dp);
  EXPECT_EQ(g.pick, (std::vector<int>{1, 0}));
  EXPECT_EQ(g.cost, 17.0);
}

// Ties: equal options resolve to the lower index, equal-cost allocations to fewer bytes.
TEST(Budget, TiesAreDeterministic) {
  const Items items = {
      {{8, 1.0}, {8, 1.0}, {16, 1.0}},
      {{8, 2.0}, {12, 1.0}, {12, 1.0}},
  };
  const BudgetSolution s = solve_budget(items, 100);
  EXPECT_EQ(s.pick, (std::vector<int>{0, 1}));
  EXPECT_EQ(s.bytes, 20u);
  for (int rep = 0; rep < 3; ++rep) EXPECT_EQ(solve_budget(items, 100).pick, s.pick);
}

TEST(Budget, BelowTheCheapestAllocationIsAnError) {
  const Items items = {{{10, 1.0}, {20, 0.5}}, {{5, 1.0}}};
  EXPECT_EQ(min_budget_bytes(items), 15u);
  EXPECT_EQ(solve_budget(items, 15).pick, (std::vector<int>{0, 0}));
  try {
    solve_budget(items, 14);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("15 bytes"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  EXPECT_THROW(solve_budget({}, 10), Error);
  EXPECT_THROW(solve_budget({{}}, 10), Error);
  EXPECT_THROW(solve_budget({{{1, NAN}}}, 10), Error);
}

// The real problem's size (224 projections of a 7B model, 8 candidates, bytes in the
// hundreds of megabytes) takes the rounded DP, stays within budget and close to its bound.
TEST(Budget, LargeInstanceRoundsAndStaysNearTheBound) {
  std::mt19937_64 rng(11);
  Items items = random_instance(rng, 224, 8, 4'000'000, false);
  std::uniform_int_distribution<uint64_t> jitter(0, 4095);
  for (auto& it : items)
    for (auto& o : it) o.bytes += jitter(rng);  // extras with a gcd of ~1: no exact table fits
  const uint64_t budget = (min_budget_bytes(items) + max_bytes(items)) / 2;
  const BudgetSolution s = solve_budget(items, budget);
  EXPECT_LE(s.bytes, budget);
  EXPECT_GE(s.cost, s.lower_bound);
  EXPECT_FALSE(s.exact);
  EXPECT_LT(s.cost - s.lower_bound, 1e-3 * s.cost) << s.how;
}

TEST(BudgetCandidates, ParseAndRefuseWithOneLineErrors) {
  const auto c = parse_candidates(" gptq:w3g128 ;gptq:w2g64,sym+lr:r8;");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].str(), "gptq:w2g64,sym+lr:r8");
  EXPECT_FALSE(parse_candidates(kDefaultCandidates).empty());
  const std::pair<const char*, const char*> bad[] = {
      {"", "no candidates"},
      {"gptq:w3g128;;rtn:w4", "empty candidate"},
      {"gptq:w9g128", "unsupported bits"},
      {"gptq:w3g128;gptq:w3g128", "given twice"},
      {"lr:r8", "cannot come first"},
  };
  for (const auto& [text, want] : bad) {
    try {
      parse_candidates(text);
      ADD_FAILURE() << "no error for '" << text << "'";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.rfind("--candidates: ", 0), 0u) << m;
      EXPECT_NE(m.find(want), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
  for (double bpw : {0.0, -1.0, double(NAN), double(INFINITY)})
    EXPECT_THROW(check_budget_bpw(bpw), Error) << bpw;
  EXPECT_NO_THROW(check_budget_bpw(2.25));
}

// ---- End to end on the embedded lab-s, with a tiny calibration (seconds per run) ----

const char* const kCandidates =
    "gptq:w2g128,sym,clip;gptq:w3g128,sym,clip;gptq:w4g128,sym,clip;"
    "gptq:w2g128,sym,clip+lr:r8,scale=full";

std::string quantize_cmd(const std::string& out, const std::string& extra) {
  return "quantize --model " + test::repo("models/lab-s") + " --calib " +
         test::repo("models/lab-s/README.md") +
         " --nsamples 4 --seqlen 64 --seed 3 --quiet --force --out " + out + " " + extra;
}

// The projections' weights from config.json, as the issue defines bits per weight.
int64_t lab_s_weights() {
  const auto c = nlohmann::json::parse(read_text_file(test::repo("models/lab-s/config.json")));
  const int64_t h = c["hidden_size"], f = c["intermediate_size"], L = c["num_hidden_layers"];
  const int64_t hd = c.value("head_dim", h / int64_t(c["num_attention_heads"]));
  const int64_t q = int64_t(c["num_attention_heads"]) * hd, kv = int64_t(c["num_key_value_heads"]) * hd;
  return L * (h * q + 2 * h * kv + q * h + 3 * h * f);
}

// Bytes the file holds under projection names (biases aside): what the budget promises.
uint64_t file_projection_bytes(const std::string& dir) {
  const auto f = SafetensorsFile::open(dir + "/model.safetensors");
  uint64_t b = 0;
  for (const auto& [name, e] : f.entries())
    if (name.find(".layers.") != std::string::npos && name.find("_proj.") != std::string::npos &&
        name.find(".bias") == std::string::npos)
      b += e.end - e.begin;
  return b;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The whole path: the file's projection bytes fit the budget computed here from the config,
// every layer wrote the bytes measured, the first block's q/k/v (whose statistics do not
// depend on what the measurement fed forward) have exactly the error measured, the allocation
// beats every uniform candidate that fits on the objective, and the report's --layer-recipe
// strings (and a reused measurement) reproduce the checkpoint byte for byte.
TEST(BudgetQuantize, FitsTheFileAndReplays) {
  const std::string dir = test::temp_dir();
  const double bpw = 2.6;
  const auto r = test::run_cli(quantize_cmd(dir + "/a", "--budget 2.6 --candidates '" +
                                            std::string(kCandidates) + "' --report " + dir +
                                            "/a.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const int64_t weights = lab_s_weights();
  const uint64_t budget = uint64_t(std::floor(bpw * double(weights) / 8.0));
  const uint64_t file = file_projection_bytes(dir + "/a");
  EXPECT_LE(file, budget);
  const auto rep = nlohmann::json::parse(read_text_file(dir + "/a.json"));
  const auto& b = rep.at("budget");
  EXPECT_EQ(b.at("weights").get<int64_t>(), weights);
  EXPECT_EQ(b.at("budget_bytes").get<uint64_t>(), budget);
  EXPECT_EQ(b.at("projection_bytes").get<uint64_t>(), file);
  EXPECT_EQ(b.at("objective"), "layer-kl");

  const auto& m = b.at("measurement");
  const size_t nc = m.at("candidates").size();
  ASSERT_EQ(nc, 4u);
  ASSERT_EQ(b.at("layers").size(), m.at("layers").size());
  ASSERT_EQ(rep.at("layers").size(), m.at("layers").size());
  double chosen = 0;
  std::vector<double> uniform(nc, 0.0);
  std::vector<uint64_t> uniform_bytes(nc, 0);
  std::set<size_t> used;
  for (size_t i = 0; i < m["layers"].size(); ++i) {
    const auto& ml = m["layers"][i];
    const auto& bl = b["layers"][i];
    const auto& fl = rep["layers"][i];  // the final run's row
    ASSERT_EQ(ml["name"], bl["name"]);
    ASSERT_EQ(ml["name"], fl["name"]);
    const size_t k = bl["candidate"].get<size_t>();
    used.insert(k);
    EXPECT_EQ(fl["recipe"], m["candidates"][k]);
    EXPECT_EQ(fl["bytes"].get<uint64_t>(), ml["bytes"][k].get<uint64_t>()) << ml["name"];
    const std::string name = ml["name"];
    if (name.rfind("model.layers.0.self_attn.", 0) == 0 && name.find("o_proj") == std::string::npos) {
      EXPECT_EQ(fl["output_err"].get<double>(), ml["output_err"][k].get<double>()) << name;
    }
    // The default objective: layer-kl, each layer's e^2 times its measured sensitivity.
    const double sens = m["layer_sensitivity"][i].get<double>();
    EXPECT_GT(sens, 0) << name;
    const double e = ml["output_err"][k].get<double>();
    chosen += sens * e * e;
    for (size_t c = 0; c < nc; ++c) {
      const double ec = ml["output_err"][c].get<double>();
      uniform[c] += sens * ec * ec;
      uniform_bytes[c] += ml["bytes"][c].get<uint64_t>();
    }
  }
  EXPECT_GT(used.size(), 1u) << "a budget between the candidates must mix them";
  int fitting = 0;
  for (size_t c = 0; c < nc; ++c)
    if (uniform_bytes[c] <= budget) {
      ++fitting;
      EXPECT_LE(chosen, uniform[c]) << m["candidates"][c];
    }
  EXPECT_GE(fitting, 1);
  EXPECT_NEAR(chosen, b["solver"]["cost"].get<double>(), 1e-12 * chosen);

  std::string replay = "--recipe " + shell_quote(b["recipe"]);
  for (const auto& lr : b["layer_recipes"]) replay += " --layer-recipe " + shell_quote(lr);
  const auto r2 = test::run_cli(quantize_cmd(dir + "/b", replay));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_TRUE(read_text_file(dir + "/a/model.safetensors") ==
              read_text_file(dir + "/b/model.safetensors"))
      << "the replayed recipes wrote other bytes";
  const auto r3 = test::run_cli(quantize_cmd(dir + "/c", "--budget 2.6 --candidates '" +
                                            std::string(kCandidates) + "' --measurements " +
                                            dir + "/a.json"));
  ASSERT_EQ(r3.exit_code, 0) << r3.err;
  EXPECT_TRUE(read_text_file(dir + "/a/model.safetensors") ==
              read_text_file(dir + "/c/model.safetensors"))
      << "a reused measurement chose differently";
  // Another budget from the same measurement must still fit, and a different candidate list
  // is refused.
  const auto r4 = test::run_cli(quantize_cmd(dir + "/d", "--budget 3.3 --candidates '" +
                                            std::string(kCandidates) + "' --measurements " +
                                            dir + "/a.json"));
  ASSERT_EQ(r4.exit_code, 0) << r4.err;
  EXPECT_LE(file_projection_bytes(dir + "/d"), uint64_t(std::floor(3.3 * double(weights) / 8.0)));
  EXPECT_GT(file_projection_bytes(dir + "/d"), file);
  const auto r5 = test::run_cli(quantize_cmd(dir + "/e", "--budget 2.6 --measurements " + dir + "/a.json"));
  EXPECT_NE(r5.exit_code, 0);
  EXPECT_NE(r5.err.find("measured for other candidates"), std::string::npos) << r5.err;
}

// The measurement, the sensitivities and the solver add nothing thread-dependent.
TEST(BudgetQuantize, SameBytesWithAnyThreadCount) {
  const std::string dir = test::temp_dir();
  std::string first;
  for (int threads : {1, 2, 5}) {
    const std::string out = dir + "/t" + std::to_string(threads);
    const auto r = test::run_cli("--threads " + std::to_string(threads) + " " +
                                 quantize_cmd(out, "--budget 2.9 --objective layer-kl "
                                                   "--kl-windows 2 --candidates '" +
                                                   std::string(kCandidates) + "'"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::string all =
        read_text_file(out + "/model.safetensors") + read_text_file(out + "/config.json");
    if (first.empty())
      first = all;
    else
      EXPECT_TRUE(all == first) << threads << " threads wrote other bytes";
  }
}

TEST(BudgetQuantize, BadInputIsAOneLineError) {
  const std::string dir = test::temp_dir();
  const std::pair<std::string, std::string> cases[] = {
      {"--budget 0", "--budget: needs a positive number"},
      {"--budget -2", "--budget: needs a positive number"},
      {"--budget nan", "--budget: needs a positive number"},
      {"--budget 2.5 --candidates 'gptq:w3g128;;gptq:w2g128'", "empty candidate"},
      {"--budget 2.5 --candidates 'gptq:w9g128'", "unsupported bits"},
      {"--budget 2.5 --recipe gptq:w3g128", "instead of --recipe"},
      {"--budget 2.5 --layer-recipe 'q_proj=fp'", "--layer-recipe does not combine"},
      {"--budget 2.5 --objective best", "unknown objective"},
      {"--budget 2.5 --measure-feed none", "unknown feed"},
      {"--budget 2.5 --measurements " + dir + "/missing.json", "missing.json"},
      {"--recipe gptq:w3g128 --candidates gptq:w3g128", "--budget"},
      {"", "--recipe: required"},
      // Found after measuring the first block; the cheapest default candidate is 2 bits with
      // an F16 scale per 128 weights.
      {"--budget 1.5", "below the cheapest allocation of these candidates: 2.1250 bits per weight"},
  };
  for (const auto& [args, want] : cases) {
    const auto r = test::run_cli(quantize_cmd(dir + "/o", args));
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.err.find(want), std::string::npos) << args << ": " << r.err;
    std::string err = r.err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    EXPECT_EQ(err.find('\n'), std::string::npos) << args << ": " << r.err;
  }
}

}  // namespace
}  // namespace lrq
