// One global bits-per-weight budget, end to end (issue 24): measure every candidate recipe on
// every projection under the run's sequential calibration, weigh the errors into a model-level
// objective, choose one candidate per projection within the budget (quant/budget.h), and run
// the final quantization with the choice as ordinary per-layer recipe overrides, which the
// report keeps as `--layer-recipe` strings that replay it.
//
//   measure_candidates   one calibration walk; per projection its statistics once, every
//                        candidate quantized from them: bytes as written, output error
//   allocate_budget      objective + knapsack -> default recipe and per-layer overrides
//   quantize_to_budget   both, then quantize_model with the overrides; checks that every
//                        layer wrote the bytes measured and the total fits
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "quant/budget.h"
#include "quant/pipeline.h"

namespace lrq {

/// How layer errors add up to the model's predicted loss (docs/DECISIONS.md, "Bits-per-weight
/// budget"). e = a layer's relative output error ||(W - Wq) X|| / ||W X||, the report's out_err.
enum class BudgetObjective : uint8_t {
  Sum,      ///< sum of e
  Power,    ///< sum of e^2: the output noise power relative to the signal, every layer alike
  BlockKl,  ///< sum of s_b e^2, s_b measured per block: the final logits' KL per unit of e^2
  LayerKl,  ///< sum of s_i e^2, s_i measured per projection the same way
};
BudgetObjective parse_budget_objective(const std::string& s, const std::string& arg = "--objective");
std::string_view budget_objective_name(BudgetObjective o);

/// Which of a projection's candidates the measurement installs for the later sites and blocks.
enum class MeasureFeed : uint8_t {
  Best,  ///< the one with the smallest output error (closest to what any allocation feeds on)
  Fp,    ///< none: statistics of the full-precision model (as --fp-inputs)
};
MeasureFeed parse_measure_feed(const std::string& s, const std::string& arg = "--measure-feed");
std::string_view measure_feed_name(MeasureFeed f);

/// The candidates when none are given: 2-4 bits, groups 32-128, GPTQ on FLRQ's symmetric
/// clipped grid, and rank-8 error correction on the two cheapest widths.
extern const char* const kDefaultCandidates;
/// "R1;R2;..." -> recipes. One-line errors naming `arg`: an empty list or entry, a recipe that
/// does not parse, a block method (its layers are not chosen one by one), a repeated recipe.
std::vector<Recipe> parse_candidates(const std::string& text,
                                     const std::string& arg = "--candidates");

struct BudgetOptions {
  double bpw = 0;  ///< bits per weight over the projections' stored bytes
  std::vector<Recipe> candidates;
  BudgetObjective objective = BudgetObjective::LayerKl;
  MeasureFeed feed = MeasureFeed::Best;
  /// Calibration windows for the sensitivities (objectives BlockKl, LayerKl).
  int64_t kl_windows = 4;
};
/// A positive, finite bits per weight; else an Error naming `arg`.
void check_budget_bpw(double bpw, const std::string& arg = "--budget");

struct CandidateResult {
  uint64_t bytes = 0;  ///< bytes the checkpoint writer stores for the layer (bias excluded)
  double output_err = 0, weight_err = 0, seconds = 0;
};
struct ProjectionMeasure {
  std::string name;
  int64_t block = 0, in = 0, out = 0;
  std::vector<CandidateResult> c;  ///< in candidate order
};
struct Measurements {
  std::vector<std::string> candidates;  ///< canonical recipe strings
  MeasureFeed feed = MeasureFeed::Best;
  std::vector<ProjectionMeasure> layers;  ///< in the pipeline's order
  /// Per block (objectives BlockKl, LayerKl): mean KL of the final logits from the
  /// full-precision model's when only that block's projections take their most accurate
  /// candidate, and that KL per unit of the block's summed e^2. Per layer (LayerKl): the same
  /// with one projection swapped. Empty when not measured.
  std::vector<double> block_kl, block_sensitivity, layer_kl, layer_sensitivity;
  double seconds = 0, sensitivity_seconds = 0;
  StageTimes stages;
  nlohmann::json to_json() const;
  /// Reads to_json()'s form; errors name `where`.
  static Measurements from_json(const nlohmann::json& j, const std::string& where);
};

/// Bytes the checkpoint writer stores for `layer` as projection `name` (its tensors, the bias
/// left out: it is not part of the weight the budget counts).
uint64_t projection_disk_bytes(const Linear& layer, const std::string& name);

/// The measurement pass. Leaves `model` as it found it (full precision).
Measurements measure_candidates(Model& model, const std::vector<std::vector<int32_t>>& windows,
                                const QuantizeOptions& o, const BudgetOptions& b);

struct Allocation {
  uint64_t budget_bytes = 0;
  int64_t weights = 0;
  std::vector<int> pick;  ///< per measured layer, the candidate index
  /// The replayable form: the most common pick as the recipe, an exact-name override for every
  /// other layer.
  Recipe recipe;
  std::vector<LayerRecipe> overrides;
  std::vector<std::string> layer_recipe_args;  ///< "REGEX=RECIPE", as --layer-recipe takes
  BudgetSolution solution;
  double seconds = 0;
};
/// Objective + knapsack. Errors: a budget below the cheapest allocation (naming its bits per
/// weight), BlockKl without measured sensitivities.
Allocation allocate_budget(const Measurements& m, const BudgetOptions& b);

struct BudgetRun {
  double bpw = 0;
  BudgetObjective objective = BudgetObjective::LayerKl;
  Measurements measured;
  Allocation alloc;
  QuantizeReport report;     ///< of the final quantization
  uint64_t disk_bytes = 0;   ///< the projections' bytes as the writer stores them
  double seconds = 0;        ///< measurement (0 when reused) + solve + final run
  nlohmann::json to_json() const;
};
/// Measures (or takes `reuse`, which must be of these candidates and this model), allocates,
/// restores the model and quantizes it with the allocation. An Error if a layer's bytes differ
/// from the measured ones (a candidate whose size depends on the data) or the total exceeds
/// the budget.
BudgetRun quantize_to_budget(Model& model, const std::vector<std::vector<int32_t>>& windows,
                             const QuantizeOptions& o, const BudgetOptions& b,
                             const Measurements* reuse = nullptr);

}  // namespace lrq
