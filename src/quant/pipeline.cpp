#include "quant/pipeline.h"

#include <chrono>
#include <cmath>

#include "backend/memory.h"
#include "backend/ops.h"
#include "calib/stats.h"
#include "core/interrupt.h"
#include "core/progress.h"
#include "quant/method.h"

namespace lrq {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A projection's weight as F32 on its own device. A dense BF16/F16 weight on the GPU is
// widened there by the embedding gather (Tensor::to(DType) would round-trip through the host).
Tensor dense_f32(const Linear& lin) {
  auto* d = dynamic_cast<const DenseLinear*>(&lin);
  if (!d || d->device() == Device::CPU || d->weight().dtype() == DType::F32)
    return lin.dequantize();
  const Tensor& W = d->weight();
  std::vector<int32_t> rows(size_t(W.dim(0)));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = int32_t(i);
  Tensor out = Tensor::empty({W.dim(0), W.dim(1)}, DType::F32, W.device());
  ops::embedding(W, rows, out);
  return out;
}

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

size_t QuantizeReport::total_bytes() const {
  size_t b = 0;
  for (const auto& l : layers) b += l.bytes;
  return b;
}

int64_t QuantizeReport::total_weights() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.in * l.out;
  return n;
}

nlohmann::json QuantizeReport::to_json() const {
  nlohmann::json j;
  j["layers"] = nlohmann::json::array();
  double werr = 0, oerr = 0;
  for (const auto& l : layers) {
    nlohmann::json e = {{"name", l.name},         {"recipe", l.recipe},
                        {"layer", l.describe},    {"in", l.in},
                        {"out", l.out},           {"bytes", l.bytes},
                        {"bpw", l.bpw},           {"weight_err", l.weight_err},
                        {"output_err", l.output_err}, {"seconds", l.seconds}};
    for (auto& [k, v] : l.extra.items()) e[k] = v;
    j["layers"].push_back(e);
    werr += l.weight_err;
    oerr += l.output_err;
  }
  const double n = double(std::max<size_t>(1, layers.size()));
  j["total"] = {{"bytes", total_bytes()},
                {"weights", total_weights()},
                {"bpw", 8.0 * double(total_bytes()) / double(std::max<int64_t>(1, total_weights()))},
                {"mean_weight_err", werr / n},
                {"mean_output_err", oerr / n},
                {"seconds", seconds},
                {"stages", stages.to_json()},
                {"device", device_name(device)},
                {"streamed", streamed}};
  if (device != Device::CPU) {
    j["total"]["peak_gpu_bytes"] = peak_gpu_bytes;
    j["total"]["gpu_device_used_bytes"] = gpu_device_used_bytes;
  }
  return j;
}

QuantizeReport quantize_model(Model& model, const std::vector<std::vector<int32_t>>& windows,
                              const QuantizeOptions& o) {
  const auto t_start = std::chrono::steady_clock::now();
  const ModelConfig& cfg = model.config();
  LRQ_ASSERT(!windows.empty());
  const int64_t L = int64_t(windows[0].size());
  const Device dev = o.device;
  if (model.device() != Device::CPU && model.device() != dev)
    fail("quantize", "the model is on {} but calibration was asked on {}",
         device_name(model.device()), device_name(dev));
  const bool streamed = dev != Device::CPU && model.device() == Device::CPU;
  const bool gpu = dev != Device::CPU;
  QuantizeReport rep;
  rep.device = dev;
  rep.streamed = streamed;
  if (gpu) backend::reset_gpu_peak();
  StageTimes& st = rep.stages;
  // Charges the wall time of f to a stage; GPU work is drained first and after, so kernels
  // queued by one stage are not billed to the next.
  auto timed = [&](double& slot, auto&& f) {
    if (gpu) ops::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    if (gpu) ops::synchronize();
    slot += seconds_since(t0);
  };
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
  const bool tf32 = gpu && o.tf32, bf16 = gpu && o.bf16;

  // One block's activations at a time: X holds the inputs of the current block, on `dev`.
  std::vector<Tensor> X;
  timed(st.transfer, [&] { X = model.embed_all(windows, dev); });
  // Streaming: block l + 1's weights cross while block l computes and block l - 1's quantized
  // layers go back meanwhile; the transfer stages hold only what the work had to wait for.
  std::unique_ptr<backend::CopyQueue> copies;
  if (streamed) {
    copies = std::make_unique<backend::CopyQueue>();
    backend::CopyQueue::Capture c(*copies);
    model.block_to(0, dev);
  }
  // Every window is a one-shot forward from position 0: no KV cache (attention reads each
  // call's own k and v).
  KVCache cache;
  const std::vector<Site> sites = {Site::AttnIn, Site::OIn, Site::MlpIn, Site::DownIn};
  auto site_width = [&](Site s) {
    return s == Site::OIn ? cfg.q_width() : s == Site::DownIn ? cfg.intermediate : cfg.hidden;
  };
  Progress prog("quantize", cfg.n_layers, o.progress);

  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    if (streamed) {
      timed(st.transfer, [&] { copies->fence_uploads(); });
      if (l + 1 < cfg.n_layers) {
        backend::CopyQueue::Capture c(*copies);
        model.block_to(l + 1, dev);
      }
    }
    // Statistics: per site, from the block with the projections before it already quantized
    // (sites mode), or all four sites from one pass of the block as it enters (block mode,
    // fp_inputs).
    std::vector<std::unique_ptr<SiteStats>> stats(4);
    std::vector<std::unique_ptr<SiteStats>> host_stats(4);  // CPU copies for CPU-only methods
    auto run_sites = [&](const std::vector<Site>& want, Site stop) {
      PrecisionScope scope(tf32, bf16);
      const auto t0 = std::chrono::steady_clock::now();
      double in_stats = 0;
      for (Site s : want) stats[size_t(s)] = std::make_unique<SiteStats>(site_width(s), dev);
      for (const Tensor& x0 : X) {
        Tensor x = x0.clone();
        model.block_forward(
            l, x, 0, cache,
            [&](int64_t, Site s, const Tensor& in) {
              if (stats[size_t(s)] && std::find(want.begin(), want.end(), s) != want.end())
                timed(in_stats, [&] { stats[size_t(s)]->add(in); });
            },
            nullptr, stop);
      }
      timed(in_stats, [&] {
        for (Site s : want) stats[size_t(s)]->finalize();
      });
      if (gpu) ops::synchronize();
      st.forward += seconds_since(t0) - in_stats;
      st.stats += in_stats;
    };
    const bool one_pass = o.fp_inputs || o.calib_mode == CalibMode::Block;
    std::vector<std::pair<std::string, std::unique_ptr<Linear>>> pending;
    if (one_pass) run_sites(sites, Site::DownIn);
    for (Site s : sites) {
      if (!one_pass) run_sites({s}, s);
      for (const auto& proj : site_projections(s)) {
        check_interrupted();
        const std::string name = Model::linear_name(l, proj);
        const Recipe& r = recipe_for(name, o.recipe, o.overrides);
        if (r.base().method == "fp") continue;
        auto t0 = std::chrono::steady_clock::now();
        const Device bdev = model.block_device(l);
        auto method = make_method(r);
        const Device mdev = method->runs_on(bdev) ? bdev : Device::CPU;
        Tensor W;
        timed(st.method, [&] { W = dense_f32(model.linear(name)); });
        Tensor Wm = W;
        const SiteStats* S = stats[size_t(s)].get();
        if (mdev != bdev)
          timed(st.transfer, [&] {
            Wm = W.to(mdev);
            if (!host_stats[size_t(s)])
              host_stats[size_t(s)] = std::make_unique<SiteStats>(S->to(mdev));
            S = host_stats[size_t(s)].get();
          });
        QuantJob job{name, o.seed ^ (uint64_t(l) * 0x9E3779B97F4A7C15ull + proj.size())};
        Quantized q;
        timed(st.method, [&] { q = method->quantize(Wm, *S, job); });
        if (q.layer->device() != bdev)
          timed(st.transfer, [&] { q.layer = q.layer->to(bdev); });
        // The projection's bias (Qwen2 q/k/v) stays outside the quantized weight.
        const auto* dense = dynamic_cast<const DenseLinear*>(&model.linear(name));
        const Tensor bias = dense ? dense->bias() : Tensor();
        if (bias.defined()) q.layer = std::make_unique<BiasedLinear>(std::move(q.layer), bias);
        LayerReport lr;
        lr.name = name;
        lr.recipe = r.str();
        lr.describe = q.layer->describe();
        lr.in = W.dim(1);
        lr.out = W.dim(0);
        lr.bytes = q.layer->storage_bytes();
        lr.bpw = q.layer->bits_per_weight();
        // On the GPU the block's later forwards (statistics of later sites, the next block's
        // inputs) run the dequantized matrix the report makes anyway, as a dense stand-in:
        // the same function as the packed layer, without re-dequantizing it for every window.
        std::unique_ptr<Linear> stand_in;
        timed(st.report, [&] {
          Tensor Wq = q.layer->dequantize().to(W.device());
          const LayerErrors e = layer_errors(W, Wq, stats[size_t(s)]->H());
          lr.weight_err = e.weight;
          lr.output_err = e.output;
          if (gpu && !o.fp_inputs)
            stand_in = std::make_unique<DenseLinear>(bf16 ? ops::to_bf16(Wq) : Wq, bias);
        });
        lr.seconds = seconds_since(t0);
        lr.extra = std::move(q.extra);
        rep.layers.push_back(std::move(lr));
        if (o.fp_inputs) {
          pending.emplace_back(name, std::move(q.layer));
        } else if (stand_in) {
          model.set_linear(name, std::move(stand_in));
          pending.emplace_back(name, std::move(q.layer));
        } else {
          model.set_linear(name, std::move(q.layer));
        }
      }
    }
    stats.clear();
    host_stats.clear();
    // Inputs of the next block.
    timed(st.forward, [&] {
      PrecisionScope scope(tf32, bf16);
      for (Tensor& x : X) model.block_forward(l, x, 0, cache);
    });
    for (auto& [name, layer] : pending) model.set_linear(name, std::move(layer));
    if (streamed) timed(st.offload, [&] {
        backend::CopyQueue::Capture c(*copies);
        model.block_to(l, Device::CPU);  // Linear::to only copies: nothing reads the bytes yet
      });
    prog.update(l + 1, "block " + std::to_string(l));
  }
  if (streamed) timed(st.offload, [&] { copies->fence(); });  // the last blocks' bytes
  if (gpu) {
    X.clear();
    const backend::GpuMemory m = backend::gpu_memory();
    rep.peak_gpu_bytes = m.peak_used;
    rep.gpu_device_used_bytes = m.total - m.free;
  }
  rep.seconds = seconds_since(t_start);
  prog.finish();
  return rep;
}

}  // namespace lrq
