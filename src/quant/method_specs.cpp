// The option tables of every method: what the recipe parser accepts, the defaults, the help.
#include "quant/recipe.h"

namespace lrq {

namespace {
using K = OptionSpec;
const std::vector<std::string> kBits = {"2", "3", "4", "8"};

std::vector<OptionSpec> grid_options() {
  return {{"bits", K::Int, "4", "code width (wB shorthand)", kBits},
          {"group", K::Int, "0", "input columns per scale group, 0 = one group per row (wBgG)"},
          {"sym", K::Flag, "", "symmetric grid (no stored zero point)"},
          {"clip", K::Flag, "", "search a shrink of each group's range minimizing the "
                                "diag(H)-weighted error"}};
}

std::vector<OptionSpec> gptq_options() {
  return {{"act_order", K::Flag, "", "quantize columns by decreasing diag(H)"},
          {"static_groups", K::Flag, "", "group scales from the original weights, up front"},
          {"damp", K::Float, "0.01", "diagonal damping, a fraction of mean diag(H)"},
          {"blocksize", K::Int, "128", "lazy-update block width"}};
}

template <class... V>
std::vector<OptionSpec> cat(V... parts) {
  std::vector<OptionSpec> out;
  (out.insert(out.end(), parts.begin(), parts.end()), ...);
  return out;
}
}  // namespace

// Specs of the methods not yet registered from their own files (quant/method.h).
const std::vector<MethodSpec>& builtin_method_specs() {
  static const std::vector<MethodSpec> specs = {
      {"fp", "keep the layer in its original precision", {}},
      {"rtn", "round to nearest on a uniform grid", grid_options()},
      {"gptq", "GPTQ: column-wise quantization with Hessian error compensation",
       cat(grid_options(), gptq_options())},
      {"awq", "activation-aware per-input-channel scaling (searched exponent), then RTN or GPTQ",
       cat(grid_options(), gptq_options(),
           std::vector<OptionSpec>{
               {"base", K::Choice, "rtn", "quantizer after scaling", {"rtn", "gptq"}},
               {"grid", K::Int, "20", "exponent candidates in [0, 1)"}})},
      {"nf", "NormalFloat codebook (QLoRA) with per-block absmax",
       {{"bits", K::Int, "4", "code width (bB shorthand)", {"3", "4"}},
        {"block", K::Int, "64", "weights per absmax block along the input (blockN)"}}},
      {"flrq",
       "FLRQ: W ~ L R + Q(Clip(W - L R)), rank per layer by R1-FLR, BLC refinement",
       {{"bits", K::Int, "3", "residual code width (wB shorthand)", kBits},
        {"group", K::Int, "128", "residual group size"},
        {"asym", K::Flag, "", "asymmetric residual grid (FLRQ: symmetric)"},
        {"clip", K::Choice, "on", "clip search on the residual grid", {"on", "off"}},
        {"residual", K::Choice, "rtn", "residual quantizer", {"rtn", "gptq"}},
        {"act", K::Float, "0.5", "activation-scaling exponent: R1-FLR runs on W diag(mean|x|^act)"},
        {"sketch", K::Choice, "r1", "low-rank primitive", {"r1", "block", "rsvd", "svd"}},
        {"it", K::Int, "2", "power iterations of the sketch"},
        {"x", K::Float, "0.2", "R1-FLR: stop when storage growth k > 1 + x"},
        {"flat", K::Float, "0.001", "R1-FLR: stop when the mean relative amax drop over the "
                                    "last 4 ranks is below this"},
        {"rank", K::Int, "0", "fixed rank instead of R1-FLR (0: flexible)"},
        {"maxrank", K::Int, "256", "upper bound on the flexible rank"},
        {"blc", K::Choice, "on", "BLC alternation", {"on", "off"}},
        {"epochs", K::Int, "0", "BLC epochs (0: 1 at >= 3 bits, 20 at 2 bits)"},
        {"act_order", K::Flag, "", "GPTQ residual: act-order"},
        {"damp", K::Float, "0.01", "GPTQ residual: damping"}}},
      {"lopro",
       "LoPRo: low-rank part + GPTQ on the importance-permuted, block-Hadamard-rotated residual",
       {{"bits", K::Int, "2", "residual code width (wB shorthand)", kBits},
        {"group", K::Int, "128", "residual group size"},
        {"sym", K::Flag, "", "symmetric residual grid"},
        {"clip", K::Flag, "", "clip search for the residual grids"},
        {"block", K::Int, "128", "Hadamard block size, a power of two (blockN)"},
        {"protect", K::Int, "1", "most salient blocks left unrotated"},
        {"imp", K::Choice, "diag", "column importance: diag (H_jj), wdiag (H_jj ||W_:j||^2), "
                                   "meanabs (mean |x_j|)", {"diag", "wdiag", "meanabs"}},
        {"perm", K::Choice, "on", "group columns of similar importance", {"on", "off"}},
        {"rot", K::Choice, "block", "rotation: block WHT, one global WHT (largest power-of-two "
                                    "block dividing the width), or none",
         {"block", "global", "none"}},
        {"act", K::Float, "0.5", "activation-scaling exponent for the sketch"},
        {"sketch", K::Choice, "r1", "low-rank primitive", {"r1", "block", "rsvd", "svd"}},
        {"it", K::Int, "2", "power iterations of the sketch"},
        {"x", K::Float, "0.2", "R1-FLR storage-growth bound"},
        {"flat", K::Float, "0.001", "R1-FLR amax-flattening threshold"},
        {"rank", K::Int, "0", "fixed rank instead of R1-FLR (0: flexible)"},
        {"maxrank", K::Int, "256", "upper bound on the flexible rank"},
        {"hp", K::Int, "8", "leading ranks stored fp16; the rest int8 with per-row scales"},
        {"factors", K::Choice, "mixed", "factor precision: mixed (hp fp16 + int8) or fp16",
         {"mixed", "fp16"}},
        {"damp", K::Float, "0.01", "GPTQ damping"}}},
      {"lr", "low-rank correction L R fitted to the quantization error of the base method",
       {{"rank", K::Int, "16", "rank (rN shorthand)"},
        {"scale", K::Choice, "none",
         "error weighting: none (LoRC), diag (LQER: mean |x|), full (QERA: H^1/2)",
         {"none", "diag", "full"}}},
       true},
  };
  return specs;
}

}  // namespace lrq
