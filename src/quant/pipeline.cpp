#include "quant/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "backend/ops.h"
#include "calib/stats.h"
#include "core/interrupt.h"
#include "core/progress.h"
#include "quant/activations.h"
#include "quant/method.h"
#include "quant/resume.h"

namespace lrq {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

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

// The projection's bias (Qwen2 q/k/v) stays outside the quantized weight.
std::unique_ptr<Linear> keep_bias(const Model& model, const std::string& name,
                                  std::unique_ptr<Linear> layer) {
  const auto* dense = dynamic_cast<const DenseLinear*>(&model.linear(name));
  const Tensor bias = dense ? dense->bias() : Tensor();
  if (bias.defined()) return std::make_unique<BiasedLinear>(std::move(layer), bias);
  return layer;
}

namespace {

// Reports a quantized layer against its full-precision weight W on its site's statistics,
// then installs it; `seconds` so far are the layer's share of the method's time.
void report_and_install(CalibRunner& run, QuantizeReport& rep, const std::string& name,
                        const Recipe& r, const Tensor& W, Quantized q, const SiteStats& st,
                        double seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  q.layer = keep_bias(run.model(), name, run.to_block_device(std::move(q.layer)));
  LayerReport lr;
  lr.name = name;
  lr.recipe = r.str(false);  // the weights' recipe; activations are the model's
  lr.describe = q.layer->describe();
  lr.in = W.dim(1);
  lr.out = W.dim(0);
  lr.bytes = q.layer->storage_bytes();
  lr.bpw = q.layer->bits_per_weight();
  // The dequantized matrix is made for the errors anyway; on the GPU it is the layer's dense
  // stand-in for the block's later forwards.
  Tensor Wq;
  run.timed(&StageTimes::report, [&] {
    Wq = q.layer->dequantize().to(W.device());
    const LayerErrors e = layer_errors(W, Wq, st.H());
    lr.weight_err = e.weight;
    lr.output_err = e.output;
  });
  lr.seconds = seconds + seconds_since(t0);
  lr.extra = std::move(q.extra);
  rep.layers.push_back(std::move(lr));
  run.install(name, std::move(q.layer), Wq);
}

constexpr Site kSites[] = {Site::AttnIn, Site::OIn, Site::MlpIn, Site::DownIn};

// Per-layer methods: per site in dependency order, each projection from its site's statistics.
void quantize_layers(CalibRunner& run, QuantizeReport& rep, const QuantizeOptions& o) {
  const int64_t l = run.layer();
  for (Site s : kSites) {
    for (const auto& proj : site_projections(s)) {
      check_interrupted();
      const std::string name = Model::linear_name(l, proj);
      const Recipe& r = recipe_for(name, o.recipe, o.overrides);
      if (r.base().method == "fp") continue;
      const auto t0 = std::chrono::steady_clock::now();
      const SiteStats& S = run.stats(s);
      const Device bdev = run.block_device();
      auto method = make_method(r);
      // A method that cannot run where the block is gets CPU copies of W and the statistics.
      const Device mdev = method->runs_on(bdev) ? bdev : Device::CPU;
      Tensor W;
      run.timed(&StageTimes::method, [&] { W = dense_f32(run.model().linear(name)); });
      Tensor Wm = W;
      if (mdev != bdev) run.timed(&StageTimes::transfer, [&] { Wm = W.to(mdev); });
      const SiteStats& Sm = run.stats(s, mdev);
      QuantJob job{name, layer_seed(o.seed, name)};
      Quantized q;
      run.timed(&StageTimes::method, [&] { q = method->quantize(Wm, Sm, job); });
      report_and_install(run, rep, name, r, W, std::move(q), S, seconds_since(t0));
    }
  }
}

// A block method: the whole block at once from its inputs (and targets). Its projections take
// the block's recipe or fp; a per-layer override to anything else is an error.
void quantize_block(CalibRunner& run, QuantizeReport& rep, const QuantizeOptions& o,
                    const Recipe& r) {
  const int64_t l = run.layer();
  check_interrupted();
  const auto t0 = std::chrono::steady_clock::now();
  auto method = make_block_method(r);
  if (!method->runs_on(run.block_device()))
    fail("quantize", "block method '{}' cannot run on {}; calibrate on the CPU",
         r.base().method, device_name(run.block_device()));
  for (const auto& proj : projection_names()) {
    const std::string name = Model::linear_name(l, proj);
    const Recipe& rp = recipe_for(name, o.recipe, o.overrides);
    if (rp.base().method != "fp" && rp.str(false) != r.str(false))
      fail("recipe", "{}: block {} is quantized by block method '{}' (the recipe of its "
           "q_proj); its projections take that recipe or fp, not '{}'",
           name, l, r.str(), rp.str());
  }
  static const std::vector<Tensor> no_targets;
  const BlockJob job{run.model(), l, run.inputs(),
                     method->needs().targets ? run.targets() : no_targets, o.seed};
  std::vector<std::pair<std::string, Quantized>> out;
  run.timed(&StageTimes::method, [&] { out = method->quantize_block(job); });
  // One layer per projection, except those the overrides keep fp, which may be left out.
  size_t known = 0;
  for (const auto& proj : projection_names()) {
    const auto n = std::count_if(out.begin(), out.end(),
                                 [&](const auto& e) { return e.first == proj; });
    known += size_t(n);
    const bool fp =
        recipe_for(Model::linear_name(l, proj), o.recipe, o.overrides).base().method == "fp";
    if (n > 1 || (n == 0 && !fp))
      fail("quantize", "block method '{}' returned {} layers for block {}'s {}",
           r.base().method, n, l, proj);
  }
  if (known != out.size())
    fail("quantize", "block method '{}' returned a layer that is not a projection",
         r.base().method);
  // The report measures every layer on the statistics of the block as it entered (one pass,
  // block mode's statistics whatever --calib-mode): the method replaced the projections all
  // at once, so there is no "earlier projections quantized" state to run.
  run.gather_all_sites();
  const double share = seconds_since(t0) / double(std::max<size_t>(1, out.size()));
  for (Site s : kSites)
    for (const auto& proj : site_projections(s))
      for (auto& [p, q] : out) {
        if (p != proj) continue;
        const std::string name = Model::linear_name(l, proj);
        if (recipe_for(name, o.recipe, o.overrides).base().method == "fp") continue;
        Tensor W;
        run.timed(&StageTimes::report, [&] { W = dense_f32(run.model().linear(name)); });
        report_and_install(run, rep, name, r, W, std::move(q), run.stats(s), share);
      }
}

}  // namespace

QuantizeReport quantize_model(Model& model, const std::vector<std::vector<int32_t>>& windows,
                              const QuantizeOptions& o) {
  const auto t_start = std::chrono::steady_clock::now();
  // Smoothing and static activation steps come first (from the full-precision model), so the
  // methods quantize the smoothed weights; the activation settings go on once every block is
  // quantized, so calibration sees full-precision activations (docs/DECISIONS.md).
  const ActivationQuant act = o.recipe.act.any()
                                  ? prepare_activations(model, windows, o.recipe.act, o.progress)
                                  : ActivationQuant{};
  CalibRunner run(model, windows,
                  CalibOptions{o.device, o.tf32, o.bf16, o.calib_mode, o.fp_inputs, o.progress});
  QuantizeReport rep;
  rep.device = o.device;
  rep.streamed = run.streamed();
  BlockCheckpoints* ck = o.checkpoints;
  for (int64_t l = 0; l < model.n_layers(); ++l) {
    run.begin_block(l);
    if (ck && l < ck->finished()) {
      // A block an earlier run finished: its layers go in as saved, and end_block() computes
      // the next inputs from them exactly as that run did.
      auto restored = ck->restore(model, l);
      for (auto& [name, layer] : restored.layers) {
        auto q = keep_bias(model, name, run.to_block_device(std::move(layer)));
        const Tensor Wq = q->dequantize();
        run.install(name, std::move(q), Wq);
      }
      for (auto& row : restored.rows) rep.layers.push_back(std::move(row));
      run.end_block();
      continue;
    }
    const size_t rows_before = rep.layers.size();
    // A block runs a block method when its q_proj's recipe names one (docs/DECISIONS.md).
    const Recipe& r = recipe_for(Model::linear_name(l, "self_attn.q_proj"), o.recipe, o.overrides);
    if (is_block_method(r))
      quantize_block(run, rep, o, r);
    else
      quantize_layers(run, rep, o);
    run.end_block();
    if (ck)
      ck->save(model, l, std::vector<LayerReport>(rep.layers.begin() + ptrdiff_t(rows_before),
                                                  rep.layers.end()));
  }
  run.finish();
  if (o.recipe.act.any()) model.set_activation_quant(act);
  rep.stages = run.times();
  rep.peak_gpu_bytes = run.peak_gpu_bytes();
  rep.gpu_device_used_bytes = run.gpu_device_used_bytes();
  rep.seconds = seconds_since(t_start);
  return rep;
}

}  // namespace lrq
