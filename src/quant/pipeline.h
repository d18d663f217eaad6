// The quantization pipeline: per block, the calibration runner (calib/runner.h) supplies inputs,
// statistics and targets; a block whose recipe names a block method is quantized whole, any
// other projection by projection from its site's statistics; each result is swapped in place.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/runner.h"
#include "model/llama.h"
#include "quant/objective.h"
#include "quant/recipe.h"

namespace lrq {

class BlockCheckpoints;

struct QuantizeOptions {
  Recipe recipe;
  std::vector<LayerRecipe> overrides;
  uint64_t seed = 0;
  /// Feed each block the outputs of the full-precision blocks before it (default: of the
  /// already-quantized ones, as GPTQ does).
  bool fp_inputs = false;
  bool progress = true;
  CalibMode calib_mode = CalibMode::Sites;
  /// Where calibration runs: the forward passes, the activations and the statistics. With
  /// CUDA and a model on the host, blocks are streamed: only the current block's weights are
  /// on the GPU, and each goes back to the host once quantized. A method that cannot run on
  /// this device (Method::runs_on) gets CPU copies of W and the statistics.
  Device device = Device::CPU;
  /// GPU only: TF32 tensor cores for the calibration GEMMs (block forwards and X^T X), not for
  /// the methods. Faster; H then differs from the F32 product by about 1e-3 relative.
  bool tf32 = false;
  /// GPU only: the calibration's activation x weight products and X^T X with activations
  /// rounded to BF16 on the tensor cores (the rest as with tf32). About twice as fast again;
  /// every activation carries BF16's 2^-9 rounding into H (docs/DECISIONS.md).
  bool bf16 = false;
  /// Where finished blocks are recorded (quant/resume.h), and restored from when it holds
  /// some: those blocks are swapped in instead of quantized. Null: no checkpoints.
  BlockCheckpoints* checkpoints = nullptr;
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
  StageTimes stages;
  Device device = Device::CPU;
  bool streamed = false;           // blocks moved to the GPU one at a time
  size_t peak_gpu_bytes = 0;       // high-water mark of our GPU allocator during the run
  size_t gpu_device_used_bytes = 0;  // cudaMemGetInfo total - free at the end (pool cache,
                                     // cuBLAS workspaces and other processes included)
  nlohmann::json to_json() const;
  /// Model totals over the projections: bytes, weights, bits per weight.
  size_t total_bytes() const;
  int64_t total_weights() const;
};

/// A projection's weight as F32 on the layer's device (what every method is handed).
Tensor dense_f32(const Linear& lin);
/// `layer` wrapped with the bias of `model`'s projection `name`, if it has one (Qwen2 q/k/v):
/// the bias stays outside the quantized weight.
std::unique_ptr<Linear> keep_bias(const Model& model, const std::string& name,
                                  std::unique_ptr<Linear> layer);

/// Quantizes every projection of `model` in place. `windows`: calibration token windows.
QuantizeReport quantize_model(Model& model, const std::vector<std::vector<int32_t>>& windows,
                              const QuantizeOptions& o);

}  // namespace lrq
