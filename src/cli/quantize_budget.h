// `lrquant quantize --budget BPW`: the options and the run (quant/allocate.h), kept beside
// cmd_quantize.cpp so that the subcommand only asks whether a budget was given.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quant/allocate.h"

namespace lrq::cli {

struct BudgetArgs {
  double bpw = 0;
  std::string candidates = kDefaultCandidates, objective = "layer-kl", feed = "best", measurements;
  int64_t kl_windows = 4;
  CLI::Option* budget_opt = nullptr;
  std::vector<CLI::Option*> with_budget;  // options that mean nothing without --budget
  bool active() const { return budget_opt && budget_opt->count() > 0; }
};

void add_budget_options(CLI::App* sub, BudgetArgs& a);

/// The budget options, checked (one-line errors): --recipe, --layer-recipe and --resume do not
/// combine with --budget; the other budget options need it.
BudgetOptions budget_options(const BudgetArgs& a, bool recipe_given, bool layer_recipes_given,
                             bool resume);

/// --measurements FILE: the "budget.measurement" of an earlier run's report (or the table
/// alone); nullopt when not given.
std::optional<Measurements> load_measurements(const BudgetArgs& a);

/// One line: the budget, the bytes written, the solver's answer and where the time went.
void print_budget(const BudgetRun& r);

}  // namespace lrq::cli
