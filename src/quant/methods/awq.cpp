// AWQ-style activation-aware scaling: W' = W diag(s) with s = mean|x|^alpha (normalized by
// sqrt(max s * min s)), quantize W', divide the input by s at run time. alpha is searched on a
// grid in [0, 1) by the output error tr(D H D^T) of an RTN quantization; the final quantizer
// is RTN or GPTQ (on H' = diag(1/s) H diag(1/s), the second moment of x / s).
#include <cmath>

#include "backend/ops.h"
#include "quant/methods/common.h"
#include "quant/methods/options.h"
#include "quant/objective.h"

namespace lrq {

namespace {

// Channel scales for one alpha, rounded to the stored fp16.
Tensor channel_scales(const Tensor& mean_abs, double alpha) {
  const int64_t n = mean_abs.numel();
  std::vector<double> s(n);
  double mx = 0, mn = 1e300;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::pow(std::max(mean_abs.data<double>()[j], 1e-8), alpha);
    mx = std::max(mx, s[j]);
    mn = std::min(mn, s[j]);
  }
  const double norm = std::sqrt(mx * mn);
  Tensor out = Tensor::empty({n});
  for (int64_t j = 0; j < n; ++j) out.data<float>()[j] = float(s[j] / norm);
  return out.to(DType::F16);
}

Tensor scale_columns(const Tensor& W, const Tensor& s16, bool divide) {
  Tensor s = s16.to(DType::F32), out = W.clone();
  const int64_t m = W.dim(0), n = W.dim(1);
  float* w = out.data<float>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      w[i * n + j] = divide ? w[i * n + j] / s.data<float>()[j] : w[i * n + j] * s.data<float>()[j];
  return out;
}

struct AwqOptions {
  GptqOptions quant;  // the final quantizer's (RTN reads its grid)
  GridChoice target;  // the grid, uniform or a K-quant's
  enum class Base { Rtn, Gptq } base = Base::Rtn;
  int grid = 20;      // exponent candidates k / grid, k < grid
};

class Awq final : public Method {
 public:
  explicit Awq(const AwqOptions& o) : o_(o) {}
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob&) const override {
    const int64_t n = W.dim(1);
    const bool weighted = o_.target.weigh_by_h;
    Tensor dH = diag_h(st);
    double best = INFINITY, best_alpha = 0;
    Tensor best_s;
    for (int k = 0; k < o_.grid; ++k) {
      const double alpha = double(k) / o_.grid;
      Tensor s = channel_scales(st.mean_abs(), alpha);
      Tensor Ws = scale_columns(W, s, false);
      Tensor imp = scale_columns(dH.reshape({1, n}), s, true);
      imp = scale_columns(imp, s, true).reshape({n});  // diag(H') = diag(H) / s^2
      Tensor Wq = scale_columns(
          quantize_on_grid(Ws, o_.target, nullptr, Tensor(), nullptr, weighted ? imp : Tensor())
              ->dequantize(),
          s, true);
      double e = hessian_error(difference(W, Wq), st.H());
      if (e < best) {
        best = e;
        best_alpha = alpha;
        best_s = s;
      }
    }
    InputTransform t;
    t.scale(best_s);
    Tensor Ws = scale_columns(W, best_s, false);
    Quantized out;
    out.extra["awq_alpha"] = best_alpha;
    if (o_.base == AwqOptions::Base::Gptq) {
      // H' = diag(1/s) H diag(1/s).
      Tensor s = best_s.to(DType::F32);
      Tensor H = st.H().clone();
      double* h = H.data<double>();
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          h[i * n + j] /= double(s.data<float>()[i]) * s.data<float>()[j];
      out.layer = quantize_on_grid(Ws, o_.target, &o_.quant, H, nullptr, Tensor(), t);
    } else {
      Tensor imp = scale_columns(scale_columns(dH.reshape({1, n}), best_s, true), best_s, true);
      out.layer = quantize_on_grid(Ws, o_.target, nullptr, Tensor(), nullptr,
                                   weighted ? imp.reshape({n}) : Tensor(), t);
    }
    return out;
  }

 private:
  AwqOptions o_;
};

std::unique_ptr<Method> make(const Stage& s) {
  using B = AwqOptions::Base;
  AwqOptions o;
  o.quant = parse_gptq_options(s);
  o.target = parse_grid_choice(s);
  o.base = choice<B>(s, "base", {B::Rtn, B::Gptq});
  o.grid = int(s.i("grid"));
  if (o.grid < 1) fail("recipe", "awq: grid must be >= 1");
  return std::make_unique<Awq>(o);
}

}  // namespace

LRQ_REGISTER_METHOD(
    awq,
    {.spec = {"awq",
              "activation-aware per-input-channel scaling (searched exponent), then RTN or GPTQ",
              cat({grid_option_specs(), gptq_option_specs(),
                   {{"base", OptionSpec::Choice, "rtn", "quantizer after scaling", {"rtn", "gptq"}},
                    {"grid", OptionSpec::Int, "20", "exponent candidates in [0, 1)"}}})},
     .order = 40,
     .layer = make});

}  // namespace lrq
