// One global size budget (issue 24): pick one candidate per projection so that the summed
// predicted error is smallest while the summed bytes stay within the budget. This is the
// multiple-choice knapsack; the solver here knows nothing of models or recipes (the
// measurement and the objective are quant/allocate.h's), so it can be tested against
// exhaustive search on toy instances.
//
// How it solves (docs/DECISIONS.md, "Bits-per-weight budget"):
//   1. Lagrangian relaxation: per item, the lower convex hull of its (bytes, cost) options;
//      every hull step is an upgrade with an efficiency (cost saved per byte). Taking the
//      upgrades in order of decreasing efficiency sweeps the Lagrange multiplier through all
//      its breakpoints exactly (no bisection tolerance); the first that does not fit gives the
//      LP bound. The bytes left are then spent greedily (best cost decrease per byte among the
//      moves that fit, any Pareto option, not only hull steps).
//   2. Dynamic programming over the bytes above each item's cheapest option, in units of
//      their greatest common divisor: exact, when the table fits (max_dp_cells). Larger
//      instances round the extra bytes up to a coarser unit (never over budget), then spend
//      the slack the rounding left with the same greedy fill.
// The better of the two is returned; ties go to the fewer bytes, then to the lower option
// indices, so the same instance gives the same answer on every machine and thread count.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lrq {

struct BudgetOption {
  uint64_t bytes = 0;
  double cost = 0;  ///< predicted error (any finite value; smaller is better)
};

struct BudgetSolution {
  std::vector<int> pick;  ///< per item, the index of the chosen option
  uint64_t bytes = 0;     ///< total bytes of the picks (<= budget)
  double cost = 0;        ///< sum of the picks' costs, added in item order
  /// Value of the LP relaxation: no allocation within the budget costs less than this.
  double lower_bound = 0;
  /// The pick is a proven optimum (the DP ran at the bytes' exact resolution, or the
  /// unconstrained optimum fits).
  bool exact = false;
  std::string how;  ///< "unconstrained", "dp", "dp-rounded" or "lagrange": what found the pick
};

struct BudgetSolverOptions {
  /// Largest DP table (items x byte units) solved at full resolution; beyond it the DP rounds
  /// bytes up to a coarser unit. One byte per cell.
  uint64_t max_dp_cells = uint64_t(1) << 26;
  bool use_dp = true;  ///< tests turn it off to check the Lagrangian path alone
};

/// Sum over items of the cheapest option's bytes: the smallest budget that admits an answer.
uint64_t min_budget_bytes(const std::vector<std::vector<BudgetOption>>& items);

/// Solves the multiple-choice knapsack above. Errors (one line, "budget: ..."): no items, an
/// item without options or with more than 65535, a cost that is not finite, a budget below
/// min_budget_bytes.
BudgetSolution solve_budget(const std::vector<std::vector<BudgetOption>>& items, uint64_t budget,
                            const BudgetSolverOptions& opt = {});

}  // namespace lrq
