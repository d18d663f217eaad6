// Option groups several methods share, each defined once: the table the recipe parser and
// `lrquant recipes` read, and the parse of a stage into the kernel's option struct. Methods
// parse their stage once, at construction, so quantize() never reads option text.
#pragma once
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "quant/kernels/flexible_rank.h"
#include "quant/kernels/gptq_solver.h"
#include "quant/recipe.h"

namespace lrq {

/// The grid: bits, group, sym, clip, and type (a ggml type's grid, shorthand q4_k etc.).
std::vector<OptionSpec> grid_option_specs();
/// The uniform grid of a stage; type=q4_0, q4_1 and q8_0 are spellings of uniform grids (ggml's
/// blocks of 32), and a K-quant type gives its stand-in (GridChoice).
RtnOptions parse_grid_options(const Stage& s);

/// A stage's grid: uniform, or a ggml K-quant's with the uniform grid that stands in for it on a
/// matrix whose width is not a multiple of 256 (llama.cpp also falls back to 32-value blocks
/// there): q2_k, q3_k -> q4_0; q4_k -> q4_1; q5_k, q6_k -> q8_0, all exportable.
struct GridChoice {
  RtnOptions grid;                   // the uniform grid, or the K-quant's stand-in
  std::optional<gguf::Type> kquant;  // Q2_K..Q6_K
  bool weigh_by_h = false;           // clip: RTN's range search (or K-quant fit) weighs by diag(H)
  /// Whether a matrix of `cols` columns is quantized on the K-quant grid.
  bool kquant_for(int64_t cols) const { return kquant && cols % gguf::kQK_K == 0; }
};
GridChoice parse_grid_choice(const Stage& s);
/// `grid` (a method's own reading of its grid options) unless the stage names a type.
GridChoice with_grid_type(const Stage& s, const RtnOptions& grid);

/// GPTQ's own options: act_order, static_groups, damp, blocksize.
std::vector<OptionSpec> gptq_option_specs();
/// The grid and GPTQ groups of a stage together.
GptqOptions parse_gptq_options(const Stage& s);

/// R1-FLR's low-rank part: act, sketch, it, x, flat, rank, maxrank (the storage rule also reads
/// the stage's bits).
std::vector<OptionSpec> flex_option_specs();
FlexRankOptions parse_flex_options(const Stage& s);

/// One option taken from a shared group by a method that uses it in another role (a residual's
/// grid, say): the kind and valid values stay the group's, the help (and default) may be the
/// method's own, since `lrquant recipes` words them for that method.
struct Pick {
  std::string_view key;
  std::optional<std::string> help = {};
  std::optional<std::string> def = {};
};
/// The picked options of `group`, in the order given.
std::vector<OptionSpec> pick(const std::vector<OptionSpec>& group,
                             std::initializer_list<Pick> keys);

/// Option tables in order, one after the other.
std::vector<OptionSpec> cat(std::initializer_list<std::vector<OptionSpec>> parts);

/// The position of a Choice option's value among its declared choices.
size_t choice_index(const Stage& s, std::string_view key);
/// A Choice option as an enum: `values` maps the declared choices, in their order.
template <class E>
E choice(const Stage& s, std::string_view key, std::initializer_list<E> values) {
  const size_t k = choice_index(s, key);
  LRQ_ASSERT(k < values.size());
  return values.begin()[k];
}

}  // namespace lrq
