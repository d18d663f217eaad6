#include "train/proj_param.h"

#include <algorithm>
#include <cmath>

#include "backend/ops.h"
#include "core/error.h"

namespace lrq {

namespace {

Param make_param(std::string name, Tensor value) {
  Param p;
  p.name = std::move(name);
  p.grad = Tensor::zeros(value.shape(), DType::F32, value.device());
  p.m = Tensor::zeros(value.shape(), DType::F32, value.device());
  p.v = Tensor::zeros(value.shape(), DType::F32, value.device());
  p.value = std::move(value);
  return p;
}

Tensor f32(const Tensor& t) { return t.dtype() == DType::F32 ? t.clone() : t.to(DType::F32); }

// dB += dS A^T and dA += B^T dS: the gradients of the factors of S = B A.
void factor_grads(const Tensor& dS, const Param& B, const Param& A, double s = 1.0) {
  ops::gemm(dS, false, A.value, true, B.grad, s, 1.0);
  ops::gemm(B.value, true, dS, false, A.grad, s, 1.0);
}

class Lora final : public ProjParam {
 public:
  Lora(const std::string& layer, Tensor W0, std::unique_ptr<LowRankLinear> base, int64_t rank,
       double alpha, uint64_t seed)
      : W0_(std::move(W0)), base_(std::move(base)), scale_(alpha / double(rank)) {
    const int64_t out = W0_.dim(0), in = W0_.dim(1);
    if (rank < 1 || rank > std::min(out, in))
      fail("--rank", "{} is outside [1, {}] for {} ({}x{})", rank, std::min(out, in), layer, out,
           in);
    Tensor A = Tensor::empty({rank, in}, DType::F32, W0_.device());
    ops::fill_randn(A, seed, 1.0 / std::sqrt(double(in)));
    B_ = make_param(layer + ".lora_B", Tensor::zeros({out, rank}, DType::F32, W0_.device()));
    A_ = make_param(layer + ".lora_A", std::move(A));
  }
  Tensor weight() const override {
    Tensor W = W0_.clone();
    ops::gemm(B_.value, false, A_.value, false, W, scale_, 1.0);
    return W;
  }
  void backward(const Tensor& dW) override { factor_grads(dW, B_, A_, scale_); }
  std::vector<Param*> params() override { return {&B_, &A_}; }
  std::unique_ptr<Linear> export_linear() const override {
    if (!base_) return std::make_unique<DenseLinear>(weight());
    // The adapter joins the base's own low-rank parts, scaled into L so the branch is unscaled.
    Tensor L = B_.value.clone();
    ops::scale(L, scale_);
    std::vector<LowRankPart> parts = base_->low_rank();
    parts.push_back(LowRankPart::from_f32(L, A_.value, false));
    return base_->with_low_rank(std::move(parts));
  }

 private:
  Tensor W0_;
  std::unique_ptr<LowRankLinear> base_;
  double scale_;
  Param B_, A_;
};

// The pieces of a LoRDS layer as F32 tensors the training products read.
struct LordsParts {
  Tensor codes, codebook, B, A;
  int bits;
  explicit LordsParts(const LordsLinear& q)
      : codes(q.unpack_codes()), codebook(q.view().codebook.clone()), B(f32(q.view().B)),
        A(f32(q.view().A)), bits(q.bits()) {}
};

class LordsPeft final : public ProjParam {
 public:
  LordsPeft(const std::string& layer, const LordsLinear& q) : p_(q) {
    B_ = make_param(layer + ".lords_B", p_.B);
    A_ = make_param(layer + ".lords_A", p_.A);
  }
  Tensor weight() const override {
    Tensor W = Tensor::empty({B_.value.dim(0), A_.value.dim(1)}, DType::F32, B_.value.device());
    ops::gemm(B_.value, false, A_.value, false, W);
    ops::scale_by_codebook(W, p_.codes, p_.codebook, 1.0);
    return W;
  }
  void backward(const Tensor& dW) override {
    Tensor dS = dW.clone();  // dW (.) Q: the gradient in S
    ops::scale_by_codebook(dS, p_.codes, p_.codebook, 1.0);
    factor_grads(dS, B_, A_);
  }
  std::vector<Param*> params() override { return {&B_, &A_}; }
  std::unique_ptr<Linear> export_linear() const override {
    return LordsLinear::pack(p_.codes, B_.value, A_.value, p_.codebook, p_.bits);
  }

 private:
  LordsParts p_;
  Param B_, A_;
};

class LordsQat final : public ProjParam {
 public:
  LordsQat(const std::string& layer, const LordsLinear& q, Tensor W, double scale_lr) : p_(q) {
    if (W.shape() != Shape{q.out_features(), q.in_features()})
      fail("model", "{}: latent weight {} does not fit the LoRDS layer", layer, W.str());
    W_ = make_param(layer + ".weight", f32(W));
    B_ = make_param(layer + ".lords_B", p_.B);
    A_ = make_param(layer + ".lords_A", p_.A);
    B_.lr_scale = A_.lr_scale = scale_lr;
  }
  Tensor weight() const override {
    Tensor S = scales(B_.value, A_.value);
    Tensor codes = assign(S);
    ops::scale_by_codebook(S, codes, p_.codebook, 1.0);
    return S;
  }
  void backward(const Tensor& dW) override {
    const Tensor S = scales(B_.value, A_.value);
    const Tensor codes = assign(S);
    Tensor dWp = Tensor::empty(dW.shape(), DType::F32, dW.device());
    Tensor dS = Tensor::empty(dW.shape(), DType::F32, dW.device());
    ops::lords_ste_backward(W_.value, S, codes, p_.codebook, dW, dWp, dS);
    ops::add_inplace(W_.grad, dWp);
    factor_grads(dS, B_, A_);
  }
  std::vector<Param*> params() override { return {&W_, &B_, &A_}; }
  std::unique_ptr<Linear> export_linear() const override {
    // The codes are those of the stored (F16-rounded) factors, so the file decodes to the
    // latent weight's nearest codebook values under the scales it holds.
    const Tensor B16 = B_.value.to(DType::F16).to(DType::F32);
    const Tensor A16 = A_.value.to(DType::F16).to(DType::F32);
    return LordsLinear::pack(assign(scales(B16, A16)), B16, A16, p_.codebook, p_.bits);
  }

 private:
  static Tensor scales(const Tensor& B, const Tensor& A) {
    Tensor S = Tensor::empty({B.dim(0), A.dim(1)}, DType::F32, B.device());
    ops::gemm(B, false, A, false, S);
    return S;
  }
  Tensor assign(const Tensor& S) const {
    Tensor codes = Tensor::empty(S.shape(), DType::U8, S.device());
    ops::lords_assign(W_.value, S, p_.codebook, Tensor{}, codes, Tensor{}, Tensor{});
    return codes;
  }

  LordsParts p_;
  Param W_, B_, A_;
};

}  // namespace

std::unique_ptr<ProjParam> make_lora(const std::string& layer, Tensor W0,
                                     std::unique_ptr<LowRankLinear> base, int64_t rank,
                                     double alpha, uint64_t seed) {
  return std::make_unique<Lora>(layer, std::move(W0), std::move(base), rank, alpha, seed);
}

std::unique_ptr<ProjParam> make_lords_peft(const std::string& layer, const LordsLinear& q) {
  return std::make_unique<LordsPeft>(layer, q);
}

std::unique_ptr<ProjParam> make_lords_qat(const std::string& layer, const LordsLinear& q,
                                          Tensor W, double scale_lr) {
  return std::make_unique<LordsQat>(layer, q, std::move(W), scale_lr);
}

}  // namespace lrq
