#include "cli/quantize_budget.h"

#include <cstdio>

#include "core/error.h"
#include "io/mapped_file.h"

namespace lrq::cli {

void add_budget_options(CLI::App* sub, BudgetArgs& a) {
  a.budget_opt = sub->add_option(
      "--budget", a.bpw,
      "bits per weight for all projections together (bytes on disk): measure every candidate "
      "on every projection, choose one each (docs/RECIPES.md); replaces --recipe");
  auto with_budget = [&](CLI::Option* o) { a.with_budget.push_back(o->capture_default_str()); };
  with_budget(sub->add_option("--candidates", a.candidates,
                              "with --budget: the recipes to choose from, separated by ';'"));
  with_budget(sub->add_option(
      "--objective", a.objective,
      "with --budget: how layer errors add up: sum (of output errors), power (of their "
      "squares), block-kl / layer-kl (squares weighted by the KL measured per block / per "
      "projection)"));
  with_budget(sub->add_option("--measure-feed", a.feed,
                              "with --budget: what the measurement feeds later layers: best "
                              "(the most accurate candidate) or fp"));
  with_budget(sub->add_option(
      "--kl-windows", a.kl_windows,
      "with --objective block-kl or layer-kl: calibration windows for the sensitivities"));
  with_budget(sub->add_option("--measurements", a.measurements,
                              "with --budget: reuse the measurement of an earlier --budget "
                              "run's --report (same model, calibration and candidates)"));
}

BudgetOptions budget_options(const BudgetArgs& a, bool recipe_given, bool layer_recipes_given,
                             bool resume) {
  if (!a.active()) {
    // Checked here, not by CLI11's needs(): its message takes a second line.
    for (const CLI::Option* o : a.with_budget)
      if (o->count() > 0) fail(o->get_name(), "needs --budget");
    if (!recipe_given) fail("--recipe", "required (or --budget BPW to choose every layer's)");
    return {};
  }
  if (recipe_given)
    fail("--budget", "chooses every layer's recipe; give the recipes to choose from with "
         "--candidates instead of --recipe");
  if (layer_recipes_given)
    fail("--budget", "chooses every layer's recipe; --layer-recipe does not combine with it");
  if (resume) fail("--resume", "does not cover --budget runs yet");
  BudgetOptions b;
  check_budget_bpw(a.bpw);
  b.bpw = a.bpw;
  b.candidates = parse_candidates(a.candidates);
  b.objective = parse_budget_objective(a.objective);
  b.feed = parse_measure_feed(a.feed);
  if (a.kl_windows < 1) fail("--kl-windows", "needs at least 1 window, got {}", a.kl_windows);
  b.kl_windows = a.kl_windows;
  return b;
}

std::optional<Measurements> load_measurements(const BudgetArgs& a) {
  if (a.measurements.empty()) return std::nullopt;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(a.measurements));
  } catch (const nlohmann::json::exception& e) {
    fail(a.measurements, "not JSON ({})", e.what());
  }
  if (j.is_object() && j.contains("budget") && j["budget"].is_object() &&
      j["budget"].contains("measurement"))
    j = j["budget"]["measurement"];
  return Measurements::from_json(j, a.measurements);
}

void print_budget(const BudgetRun& r) {
  const BudgetSolution& s = r.alloc.solution;
  std::printf("budget %.4g bits/weight: projections %.4f bits/weight (%llu of %llu bytes), "
              "objective %s %.6g (bound %.6g, %s%s), %zu layer overrides; measure %.1f s, "
              "sensitivity %.1f s, final %.1f s\n",
              r.bpw, 8.0 * double(r.disk_bytes) / double(r.alloc.weights),
              (unsigned long long)r.disk_bytes, (unsigned long long)r.alloc.budget_bytes,
              std::string(budget_objective_name(r.objective)).c_str(), s.cost, s.lower_bound,
              s.how.c_str(), s.exact ? ", optimal" : "", r.alloc.layer_recipe_args.size(),
              r.measured.seconds, r.measured.sensitivity_seconds, r.report.seconds);
}

}  // namespace lrq::cli
