// The calibration runner: the mechanics of walking a model block by block with calibration
// activations, shared by every quantization method. It owns the block's inputs, the site
// statistics, the full-precision targets, the swap of quantized layers into the model, the GPU
// streaming of blocks (CopyQueue), the TF32/BF16 scopes of the calibration products, the stage
// timing and the progress line. What is quantized, and how, is the caller's (quant/pipeline):
// calib never includes quant/.
//
// Per block l:  begin_block(l); stats(site) / inputs() / targets(); install(...) per layer;
//               end_block();   and after the last block, finish().
#pragma once
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calib/stats.h"
#include "core/progress.h"
#include "model/llama.h"

namespace lrq {

namespace backend {
class CopyQueue;
}

/// How a block's statistics are gathered (docs/DECISIONS.md, "Calibration modes").
enum class CalibMode : uint8_t {
  /// Re-run the block up to each site with the projections before it already quantized
  /// ("true sequential"): four passes per block plus one for the next block's inputs.
  Sites,
  /// One pass collects all four sites' statistics from the block as it enters (its earlier
  /// blocks quantized), then every projection is quantized, then one pass with the quantized
  /// block gives the next inputs: two passes per block, the reference GPTQ's default.
  Block,
};
/// "sites" / "block"; anything else is an Error naming `arg`.
CalibMode parse_calib_mode(const std::string& name, const std::string& arg = "--calib-mode");
std::string_view calib_mode_name(CalibMode m);

/// Where the time went (seconds, summed over blocks; GPU work is synchronized at each stage
/// boundary so queued kernels are charged to the stage that queued them).
struct StageTimes {
  double forward = 0;   // block forwards, statistics passes, targets and the next-input pass
  double stats = 0;     // X^T X and mean |x| accumulation, finalize
  double method = 0;    // the methods' quantize() (dequantizing W included)
  double report = 0;    // weight and output errors of every layer
  double transfer = 0;  // embeddings to the device, blocks in (what the GPU waited for), CPU
                        // copies for methods
  double offload = 0;   // quantized blocks back to the host (streaming)
  nlohmann::json to_json() const;
};

struct CalibOptions {
  /// Where calibration runs: forwards, activations, statistics, targets. With CUDA and a
  /// model on the host, blocks are streamed: only the current block's weights are on the GPU,
  /// and each goes back to the host once its layers are installed.
  Device device = Device::CPU;
  bool tf32 = false;  // GPU only: TF32 for the calibration products (QuantizeOptions::tf32)
  bool bf16 = false;  // GPU only: BF16 activations in those products (QuantizeOptions::bf16)
  CalibMode mode = CalibMode::Sites;
  /// Each block's inputs are the full-precision blocks' outputs: installs wait until the
  /// next inputs are computed, and the statistics come from one pass of the block as it enters.
  bool fp_inputs = false;
  bool progress = true;
};

class CalibRunner {
 public:
  /// Embeds the windows onto the calibration device and, when streaming, starts block 0's
  /// upload. The model must be on the host or on options.device.
  CalibRunner(Model& model, const std::vector<std::vector<int32_t>>& windows,
              const CalibOptions& options);
  ~CalibRunner();
  CalibRunner(const CalibRunner&) = delete;
  CalibRunner& operator=(const CalibRunner&) = delete;

  Model& model() { return model_; }
  Device device() const { return o_.device; }
  bool gpu() const { return o_.device != Device::CPU; }
  bool streamed() const { return streamed_; }
  int64_t layer() const { return layer_; }
  /// Where the current block's weights are (its layers go there).
  Device block_device() const { return model_.block_device(layer_); }

  /// Starts block l: waits for its weights (streaming) and queues the next block's upload.
  void begin_block(int64_t l);
  /// The block's inputs, one T x hidden tensor per window, on the calibration device.
  const std::vector<Tensor>& inputs() const { return X_; }
  /// A site's statistics (finalized), on `on` (default: the calibration device; another
  /// device gets a copy, made once per site). Gathered on first request: sites mode runs the
  /// block up to that site with the layers installed so far; block mode and fp_inputs gather
  /// all four sites in one pass. Ask in dependency order (AttnIn, OIn, MlpIn, DownIn).
  const SiteStats& stats(Site s, std::optional<Device> on = std::nullopt);
  /// All four sites from one pass of the block as it is now, whatever the mode.
  void gather_all_sites();
  /// The full-precision block's outputs on inputs(), F32 on the calibration device: computed
  /// on the first call, which must come before the block's first install(); freed by
  /// end_block(). 128 windows x 2048 tokens at hidden 4096 are 4.3 GB (docs/DECISIONS.md).
  const std::vector<Tensor>& targets();

  /// A layer moved to the current block's device (charged to transfer).
  std::unique_ptr<Linear> to_block_device(std::unique_ptr<Linear> layer);
  /// Swaps a quantized layer into the block (full name). `Wq`: its dequantized weight, which
  /// on the GPU stands in as a dense layer for the block's later forwards (statistics of later
  /// sites, the next inputs) instead of re-decoding the packed one for every window; the
  /// packed layer replaces it in end_block(). With fp_inputs nothing is swapped before then.
  void install(const std::string& name, std::unique_ptr<Linear> layer, const Tensor& Wq = {});
  /// The next block's inputs from this one, the pending layers swapped in, the block offloaded
  /// (streaming); statistics and targets freed; progress advanced.
  void end_block();
  /// After the last block: waits for the last offloads, records GPU memory, ends progress.
  void finish();

  /// Charges the wall time of f to a stage; GPU work is drained before and after, so kernels
  /// queued by one stage are not billed to the next.
  template <class F>
  void timed(double StageTimes::*slot, F&& f) {
    sync();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    sync();
    times_.*slot += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const StageTimes& times() const { return times_; }
  size_t peak_gpu_bytes() const { return peak_gpu_bytes_; }
  size_t gpu_device_used_bytes() const { return gpu_device_used_bytes_; }

 private:
  void sync() const;
  void run_sites(const std::vector<Site>& want, Site stop);
  int64_t site_width(Site s) const;

  Model& model_;
  CalibOptions o_;
  bool streamed_ = false;
  std::unique_ptr<backend::CopyQueue> copies_;
  std::vector<Tensor> X_, targets_;
  bool installed_ = false;  // a layer of this block was installed (targets too late)
  std::array<std::unique_ptr<SiteStats>, 4> stats_, moved_stats_;
  std::vector<std::pair<std::string, std::unique_ptr<Linear>>> pending_;
  int64_t layer_ = -1;
  StageTimes times_;
  Progress progress_;
  size_t peak_gpu_bytes_ = 0, gpu_device_used_bytes_ = 0;
};

}  // namespace lrq
