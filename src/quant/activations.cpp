#include "quant/activations.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/progress.h"

namespace lrq {

namespace {
constexpr Site kSites[] = {Site::AttnIn, Site::OIn, Site::MlpIn, Site::DownIn};

int64_t site_width(const ModelConfig& c, Site s) {
  switch (s) {
    case Site::AttnIn:
    case Site::MlpIn: return c.hidden;
    case Site::OIn: return c.q_width();
    case Site::DownIn: return c.intermediate;
  }
  return 0;
}

// The projection's weight and bias as host F32 copies; smoothing rewrites dense weights only.
struct DenseCopy {
  Tensor W, bias;
};
DenseCopy dense_copy(const Model& m, int64_t l, const std::string& proj) {
  const std::string name = Model::linear_name(l, proj);
  const auto* d = dynamic_cast<const DenseLinear*>(&m.linear(name));
  if (!d)
    fail("smooth", "{} is already quantized ({}); smoothing folds into full-precision weights",
         name, m.linear(name).describe());
  DenseCopy c;
  c.W = d->weight().to(Device::CPU).to(DType::F32);
  // A host F32 weight comes back as itself (possibly the mapped file): never write through it.
  if (d->weight().device() == Device::CPU && d->weight().dtype() == DType::F32) c.W = c.W.clone();
  if (d->bias().defined()) c.bias = d->bias().to(Device::CPU).to(DType::F32).clone();
  return c;
}

void install(Model& m, int64_t l, const std::string& proj, DenseCopy c, Device dev) {
  m.set_linear(Model::linear_name(l, proj),
               std::make_unique<DenseLinear>(c.W.to(dev), c.bias.defined() ? c.bias.to(dev)
                                                                            : Tensor()));
}

// Column maxima of |W| over the rows of several matrices with the same input width.
std::vector<float> column_absmax(std::initializer_list<const Tensor*> Ws, int64_t n) {
  std::vector<float> mx(size_t(n), 0.0f);
  for (const Tensor* W : Ws) {
    const float* p = W->data<float>();
    for (int64_t r = 0; r < W->dim(0); ++r)
      for (int64_t j = 0; j < n; ++j) mx[j] = std::max(mx[j], std::abs(p[r * n + j]));
  }
  return mx;
}

float smoothing_scale(float act_max, float w_max, double alpha) {
  if (!(act_max > 0) || !(w_max > 0) || !std::isfinite(act_max) || !std::isfinite(w_max))
    return 1.0f;
  const double s = std::pow(double(act_max), alpha) / std::pow(double(w_max), 1.0 - alpha);
  return std::isfinite(s) && s > 0 ? float(s) : 1.0f;
}

void scale_columns(Tensor& W, const std::vector<float>& s) {
  const int64_t n = W.dim(1);
  float* p = W.data<float>();
  for (int64_t r = 0; r < W.dim(0); ++r)
    for (int64_t j = 0; j < n; ++j) p[r * n + j] *= s[size_t(j)];
}

void divide_rows(DenseCopy& c, const std::vector<float>& s) {
  const int64_t n = c.W.dim(1);
  float* p = c.W.data<float>();
  for (int64_t r = 0; r < c.W.dim(0); ++r)
    for (int64_t j = 0; j < n; ++j) p[r * n + j] /= s[size_t(r)];
  if (c.bias.defined())
    for (int64_t r = 0; r < c.W.dim(0); ++r) c.bias.data<float>()[r] /= s[size_t(r)];
}

Tensor divided_norm(const Tensor& w, const std::vector<float>& s) {
  Tensor h = w.to(Device::CPU).to(DType::F32).clone();
  for (int64_t j = 0; j < h.numel(); ++j) h.data<float>()[j] /= s[size_t(j)];
  return h.to(w.device());
}
}  // namespace

SiteMaxima site_maxima(const Model& model, const std::vector<std::vector<int32_t>>& windows,
                       bool progress) {
  const ModelConfig& c = model.config();
  SiteMaxima mx(size_t(c.n_layers));
  for (auto& per_layer : mx)
    for (Site s : kSites) per_layer[int(s)].assign(size_t(site_width(c, s)), 0.0f);
  const SiteObserver observe = [&](int64_t l, Site s, const Tensor& x) {
    const Tensor h = x.to(Device::CPU);
    const int64_t n = h.dim(1);
    std::vector<float>& m = mx[size_t(l)][int(s)];
    const float* p = h.data<float>();
    for (int64_t t = 0; t < h.dim(0); ++t)
      for (int64_t j = 0; j < n; ++j) m[j] = std::max(m[j], std::abs(p[t * n + j]));
  };
  Progress bar("activation ranges", int64_t(windows.size()), progress);
  for (size_t w = 0; w < windows.size(); ++w) {
    Tensor x = model.embed(windows[w]);
    KVCache none;
    for (int64_t l = 0; l < c.n_layers; ++l) model.block_forward(l, x, 0, none, observe);
    bar.update(int64_t(w) + 1);
  }
  bar.finish();
  for (size_t l = 0; l < mx.size(); ++l)
    for (Site s : kSites)
      for (float v : mx[l][int(s)])
        if (!std::isfinite(v))
          fail("calibration", "layer {} {}: the full-precision activations are not finite", l,
               site_name(s));
  return mx;
}

SiteMaxima fold_smoothing(Model& model, const SiteMaxima& maxima, double alpha) {
  if (!(alpha >= 0 && alpha <= 1)) fail("smooth", "alpha {} is outside [0, 1]", alpha);
  const ModelConfig& c = model.config();
  SiteMaxima scales(maxima.size());
  for (int64_t l = 0; l < c.n_layers; ++l) {
    Block& b = model.block(l);
    const Device dev = model.block_device(l);
    auto q = dense_copy(model, l, "self_attn.q_proj"), k = dense_copy(model, l, "self_attn.k_proj"),
         v = dense_copy(model, l, "self_attn.v_proj"), o = dense_copy(model, l, "self_attn.o_proj"),
         g = dense_copy(model, l, "mlp.gate_proj"), u = dense_copy(model, l, "mlp.up_proj"),
         d = dense_copy(model, l, "mlp.down_proj");
    const auto& am = maxima[size_t(l)];
    auto& sc = scales[size_t(l)];
    // Every scale from the weights as they came in: folding one site must not move another's.
    const auto w_attn = column_absmax({&q.W, &k.W, &v.W}, c.hidden);
    const auto w_o = column_absmax({&o.W}, c.q_width());
    const auto w_mlp = column_absmax({&g.W, &u.W}, c.hidden);
    const auto w_down = column_absmax({&d.W}, c.intermediate);

    auto per_channel = [&](Site s, const std::vector<float>& wmax) {
      std::vector<float> out(wmax.size());
      for (size_t j = 0; j < out.size(); ++j)
        out[j] = smoothing_scale(am[int(s)][j], wmax[j], alpha);
      return out;
    };
    sc[int(Site::AttnIn)] = per_channel(Site::AttnIn, w_attn);
    sc[int(Site::MlpIn)] = per_channel(Site::MlpIn, w_mlp);
    sc[int(Site::DownIn)] = per_channel(Site::DownIn, w_down);
    // o_in: column (h, i) of o_proj's input is value channel (h / group, i); one scale per
    // value row, from the maxima over the query heads that read it.
    const int64_t hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
    std::vector<float> v_scale(size_t(c.kv_width()));
    for (int64_t kv = 0; kv < c.n_kv_heads; ++kv)
      for (int64_t i = 0; i < hd; ++i) {
        float a = 0, w = 0;
        for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
          a = std::max(a, am[int(Site::OIn)][size_t(h * hd + i)]);
          w = std::max(w, w_o[size_t(h * hd + i)]);
        }
        v_scale[size_t(kv * hd + i)] = smoothing_scale(a, w, alpha);
      }
    std::vector<float>& o_scale = sc[int(Site::OIn)];
    o_scale.resize(size_t(c.q_width()));
    for (int64_t h = 0; h < c.n_heads; ++h)
      for (int64_t i = 0; i < hd; ++i)
        o_scale[size_t(h * hd + i)] = v_scale[size_t((h / group) * hd + i)];

    b.attn_norm = divided_norm(b.attn_norm, sc[int(Site::AttnIn)]);
    for (DenseCopy* p : {&q, &k, &v}) scale_columns(p->W, sc[int(Site::AttnIn)]);
    divide_rows(v, v_scale);
    scale_columns(o.W, o_scale);
    b.mlp_norm = divided_norm(b.mlp_norm, sc[int(Site::MlpIn)]);
    for (DenseCopy* p : {&g, &u}) scale_columns(p->W, sc[int(Site::MlpIn)]);
    divide_rows(u, sc[int(Site::DownIn)]);
    scale_columns(d.W, sc[int(Site::DownIn)]);
    install(model, l, "self_attn.q_proj", std::move(q), dev);
    install(model, l, "self_attn.k_proj", std::move(k), dev);
    install(model, l, "self_attn.v_proj", std::move(v), dev);
    install(model, l, "self_attn.o_proj", std::move(o), dev);
    install(model, l, "mlp.gate_proj", std::move(g), dev);
    install(model, l, "mlp.up_proj", std::move(u), dev);
    install(model, l, "mlp.down_proj", std::move(d), dev);
  }
  return scales;
}

ActivationQuant prepare_activations(Model& model, const std::vector<std::vector<int32_t>>& windows,
                                    const ActivationSpec& spec, bool progress) {
  ActivationQuant a;
  a.kv8 = spec.kv8;
  a.a8 = spec.a8 == ActivationSpec::A8::Token    ? ActivationQuant::Mode::Token
         : spec.a8 == ActivationSpec::A8::Tensor ? ActivationQuant::Mode::Tensor
                                                 : ActivationQuant::Mode::Off;
  a.smooth = spec.smooth;
  if (spec.smooth < 0 && spec.a8 != ActivationSpec::A8::Tensor) return a;  // nothing to measure
  const SiteMaxima mx = site_maxima(model, windows, progress);
  SiteMaxima scales;
  if (spec.smooth >= 0) scales = fold_smoothing(model, mx, spec.smooth);
  if (a.a8 == ActivationQuant::Mode::Tensor) {
    const float qmax = float((1 << (ActivationQuant::kBits - 1)) - 1);
    for (size_t l = 0; l < mx.size(); ++l) {
      std::array<float, 4> st{};
      for (Site s : kSites) {
        float m = 0;
        for (size_t j = 0; j < mx[l][int(s)].size(); ++j)
          m = std::max(m, scales.empty() ? mx[l][int(s)][j]
                                         : mx[l][int(s)][j] / scales[l][int(s)][j]);
        // A site that was zero on every window: any step represents it.
        st[int(s)] = m > 0 ? m / qmax : 1.0f;
      }
      a.steps.push_back(st);
    }
  }
  return a;
}

}  // namespace lrq
