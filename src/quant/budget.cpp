#include "quant/budget.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace lrq {

namespace {

constexpr const char* kWhere = "budget";
using Items = std::vector<std::vector<BudgetOption>>;

// An item's Pareto options (nothing else has at most their bytes and at most their cost), by
// increasing bytes and so strictly decreasing cost. Equal bytes keep the cheaper cost, equal
// both the lower index: the tie rule of the whole solver.
std::vector<int> pareto(const std::vector<BudgetOption>& o) {
  std::vector<int> idx(o.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
    if (o[size_t(a)].bytes != o[size_t(b)].bytes) return o[size_t(a)].bytes < o[size_t(b)].bytes;
    return o[size_t(a)].cost < o[size_t(b)].cost;
  });
  std::vector<int> out;
  for (int i : idx)
    if (out.empty() || o[size_t(i)].cost < o[size_t(out.back())].cost) out.push_back(i);
  return out;
}

// The lower convex hull of Pareto options (bytes ascending). Collinear points stay: they are
// Lagrangian optima too, and a finer step may fit where the merged one would not.
std::vector<int> hull(const std::vector<BudgetOption>& o, const std::vector<int>& p) {
  std::vector<int> h;
  for (int i : p) {
    while (h.size() >= 2) {
      const BudgetOption& a = o[size_t(h[h.size() - 2])];
      const BudgetOption& b = o[size_t(h.back())];
      const BudgetOption& c = o[size_t(i)];
      // b lies above the chord a-c when slope(a, b) > slope(b, c); the bytes differences are
      // positive, so compare cross products (no division, so no rounding in the decision
      // beyond the two products).
      const double lhs = (b.cost - a.cost) * double(c.bytes - b.bytes);
      const double rhs = (c.cost - b.cost) * double(b.bytes - a.bytes);
      if (lhs > rhs)
        h.pop_back();
      else
        break;
    }
    h.push_back(i);
  }
  return h;
}

uint64_t checked_add(uint64_t a, uint64_t b) {
  uint64_t s = 0;
  if (__builtin_add_overflow(a, b, &s)) fail(kWhere, "total bytes overflow 64 bits");
  return s;
}

double total_cost(const Items& items, const std::vector<int>& pick) {
  double c = 0;
  for (size_t i = 0; i < items.size(); ++i) c += items[i][size_t(pick[i])].cost;
  return c;
}

uint64_t total_bytes(const Items& items, const std::vector<int>& pick) {
  uint64_t b = 0;
  for (size_t i = 0; i < items.size(); ++i) b = checked_add(b, items[i][size_t(pick[i])].bytes);
  return b;
}

// Spends the bytes the budget still allows: repeatedly the Pareto move (one item to a larger,
// better option) with the largest cost decrease per byte among those that fit; ties to the
// larger decrease, then the lower item and option order. Every move lowers the cost, so it ends.
void greedy_fill(const Items& items, const std::vector<std::vector<int>>& par, uint64_t budget,
                 std::vector<int>& pick) {
  uint64_t used = total_bytes(items, pick);
  for (;;) {
    int bi = -1, bo = -1;
    double best_ratio = 0, best_dec = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const BudgetOption& cur = items[i][size_t(pick[i])];
      for (int o : par[i]) {
        const BudgetOption& c = items[i][size_t(o)];
        if (c.bytes <= cur.bytes || !(c.cost < cur.cost)) continue;
        const uint64_t extra = c.bytes - cur.bytes;
        if (extra > budget - used) continue;
        const double dec = cur.cost - c.cost, ratio = dec / double(extra);
        if (bi < 0 || ratio > best_ratio || (ratio == best_ratio && dec > best_dec)) {
          bi = int(i);
          bo = o;
          best_ratio = ratio;
          best_dec = dec;
        }
      }
    }
    if (bi < 0) return;
    used += items[size_t(bi)][size_t(bo)].bytes - items[size_t(bi)][size_t(pick[size_t(bi)])].bytes;
    pick[size_t(bi)] = bo;
  }
}

struct LagrangeResult {
  std::vector<int> pick;
  double lower_bound = 0;
  bool all_taken = false;  // every item at its cheapest-cost option: the unconstrained optimum
};

LagrangeResult lagrange(const Items& items, const std::vector<std::vector<int>>& par,
                        uint64_t budget) {
  struct Step {
    double eff;
    int item, k;  // hull[item][k] -> hull[item][k + 1]
  };
  const size_t n = items.size();
  std::vector<std::vector<int>> h(n);
  std::vector<Step> steps;
  LagrangeResult r;
  r.pick.resize(n);
  uint64_t used = 0;
  for (size_t i = 0; i < n; ++i) {
    h[i] = hull(items[i], par[i]);
    r.pick[i] = h[i][0];
    used = checked_add(used, items[i][size_t(h[i][0])].bytes);
    double prev = std::numeric_limits<double>::infinity();
    for (size_t k = 0; k + 1 < h[i].size(); ++k) {
      const BudgetOption& a = items[i][size_t(h[i][k])];
      const BudgetOption& b = items[i][size_t(h[i][k + 1])];
      // Convexity makes an item's efficiencies non-increasing; the division's rounding can
      // break that by an ulp between collinear steps, so clamp: the sort below must keep each
      // item's steps in hull order.
      prev = std::min(prev, (a.cost - b.cost) / double(b.bytes - a.bytes));
      steps.push_back({prev, int(i), int(k)});
    }
  }
  std::stable_sort(steps.begin(), steps.end(),
                   [](const Step& a, const Step& b) { return a.eff > b.eff; });
  std::vector<size_t> at(n, 0);
  double fraction_saved = 0;
  r.all_taken = true;
  for (const Step& s : steps) {
    const size_t i = size_t(s.item);
    LRQ_ASSERT(at[i] == size_t(s.k));
    const BudgetOption& a = items[i][size_t(h[i][at[i]])];
    const BudgetOption& b = items[i][size_t(h[i][at[i] + 1])];
    const uint64_t extra = b.bytes - a.bytes;
    if (extra > budget - used) {
      // The LP optimum takes this step in part and stops: the multiplier's breakpoint.
      fraction_saved = (a.cost - b.cost) * (double(budget - used) / double(extra));
      r.all_taken = false;
      break;
    }
    used += extra;
    ++at[i];
    r.pick[i] = h[i][at[i]];
  }
  r.lower_bound = total_cost(items, r.pick) - fraction_saved;
  return r;
}

struct DpResult {
  std::vector<int> pick;
  bool exact = false;
  bool ran = false;
};

// min sum cost s.t. sum of extra bytes (above each item's cheapest Pareto option) <= slack, over
// extra bytes in units of `unit` (rounded up when unit does not divide them: never over budget).
DpResult dp(const Items& items, const std::vector<std::vector<int>>& par, uint64_t budget,
            const BudgetSolverOptions& opt) {
  DpResult r;
  const size_t n = items.size();
  uint64_t base = 0, g = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t b0 = items[i][size_t(par[i][0])].bytes;
    base = checked_add(base, b0);
    for (size_t k = 1; k < par[i].size(); ++k) g = std::gcd(g, items[i][size_t(par[i][k])].bytes - b0);
  }
  const uint64_t slack = budget - base;
  if (g == 0) return r;  // every item has one Pareto option: nothing to choose
  const uint64_t per_item = opt.max_dp_cells / n;
  if (per_item < 2) return r;
  uint64_t unit = g;
  if (slack / g + 1 > per_item) {
    unit = g * ((slack / g + per_item - 2) / (per_item - 1));  // slack / unit <= per_item - 1
    r.exact = false;
  } else {
    r.exact = true;
  }
  const uint64_t C = slack / unit;
  const size_t W = size_t(C) + 1;
  std::vector<std::vector<uint64_t>> w(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t b0 = items[i][size_t(par[i][0])].bytes;
    for (int o : par[i]) w[i].push_back((items[i][size_t(o)].bytes - b0 + unit - 1) / unit);
  }
  std::vector<double> prev(W, 0.0), cur(W);
  std::vector<uint8_t> choice(n * W);
  for (size_t i = 0; i < n; ++i) {
    for (size_t c = 0; c < W; ++c) {
      double best = 0;
      int arg = -1;
      for (size_t k = 0; k < par[i].size(); ++k) {
        if (w[i][k] > c) break;  // extras ascend along the Pareto list
        const double v = prev[c - size_t(w[i][k])] + items[i][size_t(par[i][k])].cost;
        if (arg < 0 || v < best) {
          best = v;
          arg = int(k);
        }
      }
      cur[c] = best;
      choice[i * W + c] = uint8_t(arg);
    }
    std::swap(prev, cur);
  }
  r.pick.resize(n);
  size_t c = W - 1;
  for (size_t i = n; i-- > 0;) {
    const size_t k = choice[i * W + c];
    r.pick[i] = par[i][k];
    c -= size_t(w[i][k]);
  }
  r.ran = true;
  return r;
}

}  // namespace

uint64_t min_budget_bytes(const std::vector<std::vector<BudgetOption>>& items) {
  uint64_t b = 0;
  for (const auto& it : items) {
    if (it.empty()) fail(kWhere, "an item has no options");
    uint64_t m = it[0].bytes;
    for (const auto& o : it) m = std::min(m, o.bytes);
    b = checked_add(b, m);
  }
  return b;
}

BudgetSolution solve_budget(const std::vector<std::vector<BudgetOption>>& items, uint64_t budget,
                            const BudgetSolverOptions& opt) {
  if (items.empty()) fail(kWhere, "nothing to allocate (no items)");
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].empty()) fail(kWhere, "item {} has no options", i);
    if (items[i].size() > 255) fail(kWhere, "item {} has {} options (at most 255)", i, items[i].size());
    for (const auto& o : items[i])
      if (!std::isfinite(o.cost)) fail(kWhere, "item {} has a cost that is not finite", i);
  }
  const uint64_t need = min_budget_bytes(items);
  if (budget < need)
    fail(kWhere, "{} bytes is below the cheapest allocation ({} bytes)", budget, need);

  std::vector<std::vector<int>> par(items.size());
  for (size_t i = 0; i < items.size(); ++i) par[i] = pareto(items[i]);

  LagrangeResult lg = lagrange(items, par, budget);
  BudgetSolution s;
  s.lower_bound = lg.lower_bound;
  if (lg.all_taken) {
    s.pick = lg.pick;
    s.exact = true;
    s.how = "unconstrained";
  } else {
    greedy_fill(items, par, budget, lg.pick);
    s.pick = lg.pick;
    s.how = "lagrange";
    if (opt.use_dp) {
      DpResult d = dp(items, par, budget, opt);
      if (d.ran) {
        if (!d.exact) greedy_fill(items, par, budget, d.pick);
        const double cd = total_cost(items, d.pick), cl = total_cost(items, s.pick);
        const uint64_t bd = total_bytes(items, d.pick), bl = total_bytes(items, s.pick);
        // An exact DP is optimal; an equal cost from the greedy is kept only for fewer bytes.
        if (cd < cl || (cd == cl && bd <= bl)) {
          s.pick = d.pick;
          s.how = d.exact ? "dp" : "dp-rounded";
        }
        s.exact = d.exact;
      }
    }
  }
  s.cost = total_cost(items, s.pick);
  s.bytes = total_bytes(items, s.pick);
  LRQ_ASSERT(s.bytes <= budget);
  return s;
}

}  // namespace lrq
