// AWQ-style activation-aware scaling: W' = W diag(s) with s = mean|x|^alpha (normalized by
// sqrt(max s * min s)), quantize W', divide the input by s at run time. alpha is searched on a
// grid in [0, 1) by the output error tr(D H D^T) of an RTN quantization; the final quantizer
// is RTN or GPTQ (on H' = diag(1/s) H diag(1/s), the second moment of x / s).
#include <cmath>

#include "backend/ops.h"
#include "quant/methods/common.h"
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

class Awq final : public Method {
 public:
  explicit Awq(const Stage& s)
      : o_(gptq_options(s)), base_(s.s("base")), grid_(int(s.i("grid"))) {
    if (grid_ < 1) fail("recipe", "awq: grid must be >= 1");
  }
  Quantized quantize(const Tensor& W, const SiteStats& st, const QuantJob&) const override {
    const int64_t n = W.dim(1);
    Tensor dH = diag_h(st);
    double best = INFINITY, best_alpha = 0;
    Tensor best_s;
    for (int k = 0; k < grid_; ++k) {
      const double alpha = double(k) / grid_;
      Tensor s = channel_scales(st.mean_abs(), alpha);
      Tensor Ws = scale_columns(W, s, false);
      Tensor imp = scale_columns(dH.reshape({1, n}), s, true);
      imp = scale_columns(imp, s, true).reshape({n});  // diag(H') = diag(H) / s^2
      PackedWeight q = rtn_quantize(Ws, o_.grid, o_.grid.clip_search ? imp : Tensor());
      Tensor Wq = scale_columns(q.dequantize(), s, true);
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
    if (base_ == "gptq") {
      // H' = diag(1/s) H diag(1/s).
      Tensor s = best_s.to(DType::F32);
      Tensor H = st.H().clone();
      double* h = H.data<double>();
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          h[i * n + j] /= double(s.data<float>()[i]) * s.data<float>()[j];
      out.layer = from_gptq(gptq_quantize(Ws, H, o_), t);
    } else {
      Tensor imp = scale_columns(scale_columns(dH.reshape({1, n}), best_s, true), best_s, true);
      out.layer = std::make_unique<PackedLinear>(
          rtn_quantize(Ws, o_.grid, o_.grid.clip_search ? imp.reshape({n}) : Tensor()), t,
          std::vector<LowRankPart>{});
    }
    return out;
  }

 private:
  GptqOptions o_;
  std::string base_;
  int grid_;
};
}  // namespace

std::unique_ptr<Method> make_awq(const Stage& s) { return std::make_unique<Awq>(s); }

}  // namespace lrq
