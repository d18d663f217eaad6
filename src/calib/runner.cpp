#include "calib/runner.h"

#include <algorithm>

#include "backend/memory.h"
#include "backend/ops.h"
#include "core/error.h"

namespace lrq {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// TF32/BF16 cover the calibration products only; the methods and the error report keep
// F32/F64. BF16 leaves the F32 products it does not take to TF32 and runs attention prefill
// in the fused BF16 kernel; TF32 alone runs it as TF32 GEMMs.
struct PrecisionScope {
  bool tf32, bf16, prev_tf32 = false, prev_bf16 = false;
  PrecisionScope(bool t, bool b) : tf32(t || b), bf16(b) {
    if (tf32) prev_tf32 = ops::set_allow_tf32(true);
    if (bf16) prev_bf16 = ops::set_bf16_matmul(true);
  }
  ~PrecisionScope() {
    if (tf32) ops::set_allow_tf32(prev_tf32);
    if (bf16) ops::set_bf16_matmul(prev_bf16);
  }
};

constexpr Site kSites[] = {Site::AttnIn, Site::OIn, Site::MlpIn, Site::DownIn};
}  // namespace

CalibMode parse_calib_mode(const std::string& name, const std::string& arg) {
  if (name == "sites") return CalibMode::Sites;
  if (name == "block") return CalibMode::Block;
  fail(arg, "unknown calibration mode '{}' (sites | block)", name);
}

std::string_view calib_mode_name(CalibMode m) {
  return m == CalibMode::Block ? "block" : "sites";
}

nlohmann::json StageTimes::to_json() const {
  return {{"forward", forward}, {"stats", stats},      {"method", method},
          {"report", report},   {"transfer", transfer}, {"offload", offload}};
}

CalibRunner::CalibRunner(Model& model, const std::vector<std::vector<int32_t>>& windows,
                         const CalibOptions& o)
    : model_(model), o_(o), progress_("quantize", model.n_layers(), o.progress) {
  LRQ_ASSERT(!windows.empty());
  if (model.device() != Device::CPU && model.device() != o.device)
    fail("quantize", "the model is on {} but calibration was asked on {}",
         device_name(model.device()), device_name(o.device));
  if (!gpu()) o_.tf32 = o_.bf16 = false;
  streamed_ = gpu() && model.device() == Device::CPU;
  if (gpu()) backend::reset_gpu_peak();
  // One block's activations at a time: X holds the inputs of the current block.
  timed(&StageTimes::transfer, [&] { X_ = model_.embed_all(windows, o_.device); });
  // Streaming: block l + 1's weights cross while block l computes and block l - 1's quantized
  // layers go back meanwhile; the transfer stage holds only what the work had to wait for.
  if (streamed_) {
    copies_ = std::make_unique<backend::CopyQueue>();
    backend::CopyQueue::Capture c(*copies_);
    model_.block_to(0, o_.device);
  }
}

CalibRunner::~CalibRunner() = default;

void CalibRunner::sync() const {
  if (gpu()) ops::synchronize();
}

int64_t CalibRunner::site_width(Site s) const {
  const ModelConfig& cfg = model_.config();
  return s == Site::OIn ? cfg.q_width() : s == Site::DownIn ? cfg.intermediate : cfg.hidden;
}

void CalibRunner::begin_block(int64_t l) {
  LRQ_ASSERT(l >= 0 && l < model_.n_layers());
  layer_ = l;
  installed_ = false;
  if (streamed_) {
    timed(&StageTimes::transfer, [&] { copies_->fence_uploads(); });
    if (l + 1 < model_.n_layers()) {
      backend::CopyQueue::Capture c(*copies_);
      model_.block_to(l + 1, o_.device);
    }
  }
}

void CalibRunner::run_sites(const std::vector<Site>& want, Site stop) {
  PrecisionScope scope(o_.tf32, o_.bf16);
  const auto t0 = std::chrono::steady_clock::now();
  double in_stats = 0;
  auto stats_timed = [&](auto&& f) {
    sync();
    const auto s0 = std::chrono::steady_clock::now();
    f();
    sync();
    in_stats += seconds_since(s0);
  };
  for (Site s : want) stats_[size_t(s)] = std::make_unique<SiteStats>(site_width(s), o_.device);
  // Every window is a one-shot forward from position 0: no KV cache (attention reads each
  // call's own k and v).
  KVCache cache;
  for (const Tensor& x0 : X_) {
    Tensor x = x0.clone();
    model_.block_forward(
        layer_, x, 0, cache,
        [&](int64_t, Site s, const Tensor& in) {
          if (std::find(want.begin(), want.end(), s) != want.end())
            stats_timed([&] { stats_[size_t(s)]->add(in); });
        },
        stop);
  }
  stats_timed([&] {
    for (Site s : want) stats_[size_t(s)]->finalize();
  });
  sync();
  times_.forward += seconds_since(t0) - in_stats;
  times_.stats += in_stats;
}

void CalibRunner::gather_all_sites() {
  run_sites({std::begin(kSites), std::end(kSites)}, Site::DownIn);
  for (auto& m : moved_stats_) m.reset();
}

const SiteStats& CalibRunner::stats(Site s, std::optional<Device> on) {
  LRQ_ASSERT(layer_ >= 0);
  if (!stats_[size_t(s)]) {
    if (o_.fp_inputs || o_.mode == CalibMode::Block)
      gather_all_sites();
    else
      run_sites({s}, s);
  }
  const SiteStats& st = *stats_[size_t(s)];
  if (!on || *on == st.device()) return st;
  auto& moved = moved_stats_[size_t(s)];
  if (!moved || moved->device() != *on)
    timed(&StageTimes::transfer, [&] { moved = std::make_unique<SiteStats>(st.to(*on)); });
  return *moved;
}

const std::vector<Tensor>& CalibRunner::targets() {
  LRQ_ASSERT(layer_ >= 0);
  if (targets_.empty()) {
    if (installed_)
      fail("quantize", "block {}: targets asked after a layer was installed", layer_);
    timed(&StageTimes::forward, [&] {
      PrecisionScope scope(o_.tf32, o_.bf16);
      KVCache cache;
      targets_.reserve(X_.size());
      for (const Tensor& x : X_) {
        Tensor y = x.clone();
        model_.block_forward(layer_, y, 0, cache);
        targets_.push_back(std::move(y));
      }
    });
  }
  return targets_;
}

std::unique_ptr<Linear> CalibRunner::to_block_device(std::unique_ptr<Linear> layer) {
  const Device bdev = block_device();
  if (layer->device() != bdev) timed(&StageTimes::transfer, [&] { layer = layer->to(bdev); });
  return layer;
}

void CalibRunner::install(const std::string& name, std::unique_ptr<Linear> layer,
                          const Tensor& Wq) {
  LRQ_ASSERT(layer_ >= 0);
  installed_ = true;
  if (o_.fp_inputs) {
    pending_.emplace_back(name, std::move(layer));
    return;
  }
  if (gpu() && Wq.defined()) {
    const auto* dense = dynamic_cast<const DenseLinear*>(&model_.linear(name));
    const Tensor bias = dense ? dense->bias() : Tensor();
    std::unique_ptr<Linear> stand_in;
    timed(&StageTimes::report, [&] {
      const Tensor W = Wq.to(block_device());
      stand_in = std::make_unique<DenseLinear>(o_.bf16 ? ops::to_bf16(W) : W, bias);
    });
    model_.set_linear(name, std::move(stand_in));
    pending_.emplace_back(name, std::move(layer));
    return;
  }
  model_.set_linear(name, std::move(layer));
}

void CalibRunner::end_block() {
  LRQ_ASSERT(layer_ >= 0);
  for (auto& s : stats_) s.reset();
  for (auto& s : moved_stats_) s.reset();
  targets_.clear();
  timed(&StageTimes::forward, [&] {
    PrecisionScope scope(o_.tf32, o_.bf16);
    KVCache cache;
    for (Tensor& x : X_) model_.block_forward(layer_, x, 0, cache);
  });
  for (auto& [name, layer] : pending_) model_.set_linear(name, std::move(layer));
  pending_.clear();
  if (streamed_)
    timed(&StageTimes::offload, [&] {
      backend::CopyQueue::Capture c(*copies_);
      model_.block_to(layer_, Device::CPU);  // Linear::to only copies: nothing reads the bytes yet
    });
  progress_.update(layer_ + 1, "block " + std::to_string(layer_));
}

void CalibRunner::finish() {
  if (streamed_) timed(&StageTimes::offload, [&] { copies_->fence(); });  // the last bytes
  if (gpu()) {
    X_.clear();
    const backend::GpuMemory m = backend::gpu_memory();
    peak_gpu_bytes_ = m.peak_used;
    gpu_device_used_bytes_ = m.total - m.free;
  }
  progress_.finish();
}

}  // namespace lrq
