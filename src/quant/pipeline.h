// The quantization pipeline: calibration activations flow block by block through the model;
// each projection is quantized from its input statistics and swapped in place.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/llama.h"
#include "quant/recipe.h"

namespace lrq {

struct QuantizeOptions {
  Recipe recipe;
  std::vector<LayerRecipe> overrides;
  uint64_t seed = 0;
  /// Feed each block the outputs of the full-precision blocks before it (default: of the
  /// already-quantized ones, as GPTQ does).
  bool fp_inputs = false;
  bool progress = true;
};

struct LayerReport {
  std::string name, recipe, describe;
  int64_t in = 0, out = 0;
  size_t bytes = 0;
  double bpw = 0, weight_err = 0, output_err = 0, seconds = 0;
  nlohmann::json extra;
};

struct QuantizeReport {
  std::vector<LayerReport> layers;
  double seconds = 0;
  nlohmann::json to_json() const;
  /// Model totals over the projections: bytes, weights, bits per weight.
  size_t total_bytes() const;
  int64_t total_weights() const;
};

/// Quantizes every projection of `model` in place. `windows`: calibration token windows.
QuantizeReport quantize_model(Model& model, const std::vector<std::vector<int32_t>>& windows,
                              const QuantizeOptions& o);

/// tr(D H D^T) for D (out x in, F32 or F64) and H (F64 in x in): T times the squared output
/// error ||D X||^2 of inputs with second moment H. The one objective every method compares by.
/// Both on the CPU or both on the GPU (one F64 GEMM and a dot there).
double hessian_error(const Tensor& D, const Tensor& H);
/// A - B elementwise (F32, same shape, one device).
Tensor difference(const Tensor& A, const Tensor& B);

/// Relative output error sqrt(tr(D H D^T) / tr(W H W^T)) with D = W - Wq: ||D X|| / ||W X||
/// on the calibration inputs whose second moment is H (F64). W, Wq and H on one device.
double relative_output_error(const Tensor& W, const Tensor& Wq, const Tensor& H);

}  // namespace lrq
