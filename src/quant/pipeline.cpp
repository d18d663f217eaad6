#include "quant/pipeline.h"

#include <chrono>
#include <cmath>

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

double frob_rel(const Tensor& W, const Tensor& Wq) {
  const float* a = W.data<float>();
  const float* b = Wq.data<float>();
  double num = 0, den = 0;
  for (int64_t i = 0; i < W.numel(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

double hessian_error(const Tensor& D, const Tensor& H) {
  if (D.device() != H.device())
    fail("hessian_error", "D {} and H {} are on different devices", D.str(), H.str());
  if (!D.is_cpu()) {
    // On the GPU: D widened to F64 there (Tensor::to(DType) would detour through the host),
    // one F64 GEMM and one dot.
    Tensor A = D;
    if (D.dtype() != DType::F64) {
      A = Tensor::zeros(D.shape(), DType::F64, D.device());
      ops::accumulate(A, D);
    }
    Tensor AH = Tensor::empty(D.shape(), DType::F64, D.device());
    ops::gemm(A, false, H, false, AH);
    return ops::dot(A, AH);
  }
  Tensor A = D.to(DType::F64), AH = Tensor::empty(D.shape(), DType::F64);
  ops::gemm(A, false, H, false, AH);
  const double* x = A.data<double>();
  const double* y = AH.data<double>();
  double s = 0;
  for (int64_t i = 0; i < A.numel(); ++i) s += x[i] * y[i];
  return s;
}

Tensor difference(const Tensor& A, const Tensor& B) {
  if (A.device() != B.device() || A.numel() != B.numel() || A.dtype() != DType::F32 ||
      B.dtype() != DType::F32)
    fail("difference", "needs two F32 tensors of one size on one device, got {} and {}", A.str(),
         B.str());
  if (!A.is_cpu()) {
    // -B + A is A - B exactly (negation is exact), in two passes of the seam.
    Tensor C = B.clone();
    ops::scale(C.reshape({C.numel()}), -1.0);
    ops::add_inplace(C, A);
    return C;
  }
  Tensor C = A.clone();
  float* c = C.data<float>();
  const float* b = B.data<float>();
  for (int64_t i = 0; i < C.numel(); ++i) c[i] -= b[i];
  return C;
}

double relative_output_error(const Tensor& W, const Tensor& Wq, const Tensor& H) {
  // The difference is taken in F64 so tiny errors of near-exact layers are not lost.
  if (!W.is_cpu()) {
    if (Wq.device() != W.device())
      fail("relative_output_error", "W {} and Wq {} are on different devices", W.str(), Wq.str());
    Tensor W64 = Tensor::zeros(W.shape(), DType::F64, W.device());
    Tensor D = Tensor::zeros(W.shape(), DType::F64, W.device());
    ops::accumulate(W64, W);
    ops::accumulate(D, W);
    ops::accumulate(D, Wq, -1.0);  // 0 + w - q: the same double as the CPU's w - q
    const double den = hessian_error(W64, H);
    return den > 0 ? std::sqrt(std::max(0.0, hessian_error(D, H)) / den) : 0.0;
  }
  Tensor W64 = W.to(DType::F64), D = Tensor::empty(W.shape(), DType::F64);
  const double* w = W64.data<double>();
  const float* q = Wq.data<float>();
  double* d = D.data<double>();
  for (int64_t i = 0; i < W.numel(); ++i) d[i] = w[i] - q[i];
  double den = hessian_error(W64, H);
  return den > 0 ? std::sqrt(std::max(0.0, hessian_error(D, H)) / den) : 0.0;
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
                {"seconds", seconds}};
  return j;
}

QuantizeReport quantize_model(Model& model, const std::vector<std::vector<int32_t>>& windows,
                              const QuantizeOptions& o) {
  const auto t_start = std::chrono::steady_clock::now();
  const ModelConfig& cfg = model.config();
  LRQ_ASSERT(!windows.empty());
  const int64_t L = int64_t(windows[0].size());
  QuantizeReport rep;

  // One block's activations at a time: X holds the inputs of the current block.
  std::vector<Tensor> X;
  for (const auto& w : windows) X.push_back(model.embed(w));
  KVCache cache = model.make_cache(L);
  const std::vector<Site> sites = {Site::AttnIn, Site::OIn, Site::MlpIn, Site::DownIn};
  auto site_width = [&](Site s) {
    return s == Site::OIn ? cfg.q_width() : s == Site::DownIn ? cfg.intermediate : cfg.hidden;
  };
  Progress prog("quantize", cfg.n_layers, o.progress);

  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    // Statistics: per site, from the block with the projections before it already quantized
    // (sequential), or all sites from the full-precision block (fp_inputs).
    std::vector<std::unique_ptr<SiteStats>> stats(4);
    auto run_sites = [&](const std::vector<Site>& want, std::optional<Site> stop) {
      for (Site s : want) stats[size_t(s)] = std::make_unique<SiteStats>(site_width(s));
      for (const Tensor& x0 : X) {
        Tensor x = x0.clone();
        model.block_forward(
            l, x, 0, cache,
            [&](int64_t, Site s, const Tensor& in) {
              if (stats[size_t(s)] && std::find(want.begin(), want.end(), s) != want.end())
                stats[size_t(s)]->add(in);
            },
            nullptr, stop);
      }
      for (Site s : want) stats[size_t(s)]->finalize();
    };
    std::vector<std::pair<std::string, std::unique_ptr<Linear>>> pending;
    if (o.fp_inputs) run_sites(sites, std::nullopt);
    for (Site s : sites) {
      if (!o.fp_inputs) run_sites({s}, s);
      for (const auto& proj : site_projections(s)) {
        check_interrupted();
        const std::string name = Model::linear_name(l, proj);
        const Recipe& r = recipe_for(name, o.recipe, o.overrides);
        if (r.base().method == "fp") continue;
        auto t0 = std::chrono::steady_clock::now();
        Tensor W = model.linear(name).dequantize();
        QuantJob job{name, &r, o.seed ^ (uint64_t(l) * 0x9E3779B97F4A7C15ull + proj.size())};
        Quantized q = make_method(r)->quantize(W, *stats[size_t(s)], job);
        if (auto* d = dynamic_cast<const DenseLinear*>(&model.linear(name)); d && d->bias().defined())
          q.layer = std::make_unique<BiasedLinear>(std::move(q.layer), d->bias());
        Tensor Wq = q.layer->dequantize();
        LayerReport lr;
        lr.name = name;
        lr.recipe = r.str();
        lr.describe = q.layer->describe();
        lr.in = W.dim(1);
        lr.out = W.dim(0);
        lr.bytes = q.layer->storage_bytes();
        lr.bpw = q.layer->bits_per_weight();
        lr.weight_err = frob_rel(W, Wq);
        lr.output_err = relative_output_error(W, Wq, stats[size_t(s)]->H());
        lr.seconds = seconds_since(t0);
        lr.extra = std::move(q.extra);
        rep.layers.push_back(std::move(lr));
        if (o.fp_inputs)
          pending.emplace_back(name, std::move(q.layer));
        else
          model.set_linear(name, std::move(q.layer));
      }
    }
    // Inputs of the next block.
    for (Tensor& x : X) model.block_forward(l, x, 0, cache);
    for (auto& [name, layer] : pending) model.set_linear(name, std::move(layer));
    prog.update(l + 1, "block " + std::to_string(l));
  }
  rep.seconds = seconds_since(t_start);
  prog.finish();
  return rep;
}

}  // namespace lrq
