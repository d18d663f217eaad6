#include "model/linear.h"

#include <span>
#include <vector>

#include "backend/ops.h"

namespace lrq {

DenseLinear::DenseLinear(Tensor W, Tensor bias)
    : Linear(W.dim(1), W.dim(0)), W_(std::move(W)), bias_(std::move(bias)) {
  LRQ_ASSERT(W_.ndim() == 2);
  LRQ_ASSERT(!bias_.defined() || bias_.numel() == out_);
}

void DenseLinear::forward(const Tensor& x, const Tensor& y) const {
  ops::linear(x, W_, y);
  if (bias_.defined()) ops::add_row_vector(y, bias_);
}

Tensor DenseLinear::dequantize() const {
  // to() converts into a fresh tensor; only an F32 weight needs an explicit copy.
  return W_.dtype() == DType::F32 ? W_.clone() : W_.to(DType::F32);
}

std::unique_ptr<Linear> DenseLinear::to(Device device) const {
  return std::make_unique<DenseLinear>(W_.to(device), bias_.to(device));
}

nlohmann::json DenseLinear::save(const std::string& prefix, NamedTensors& out) const {
  out.emplace_back(prefix + ".weight", W_);
  if (bias_.defined()) out.emplace_back(prefix + ".bias", bias_);
  return nullptr;
}

void forward_shared_input(const Tensor& x, std::initializer_list<const Linear*> layers,
                          std::initializer_list<Tensor> y) {
  LRQ_ASSERT(layers.size() == y.size());
  std::vector<Tensor> W;
  for (const Linear* l : layers) {
    const auto* d = dynamic_cast<const DenseLinear*>(l);
    if (!d || d->bias().defined()) break;
    W.push_back(d->weight());
  }
  if (W.size() == layers.size()) {
    ops::linear_many(x, W, std::span<const Tensor>(y.begin(), y.size()));
    return;
  }
  auto out = y.begin();
  for (const Linear* l : layers) l->forward(x, *out++);
}

std::string DenseLinear::describe() const {
  return "dense " + std::string(dtype_name(W_.dtype()));
}

BiasedLinear::BiasedLinear(std::unique_ptr<Linear> inner, Tensor bias)
    : Linear(inner->in_features(), inner->out_features()), inner_(std::move(inner)),
      bias_(std::move(bias)) {
  LRQ_ASSERT(bias_.numel() == out_);
}

std::unique_ptr<Linear> BiasedLinear::to(Device device) const {
  return std::make_unique<BiasedLinear>(inner_->to(device), bias_.to(device));
}

nlohmann::json BiasedLinear::save(const std::string& prefix, NamedTensors& out) const {
  out.emplace_back(prefix + ".bias", bias_);
  return inner_->save(prefix, out);
}

void BiasedLinear::forward(const Tensor& x, const Tensor& y) const {
  inner_->forward(x, y);
  ops::add_row_vector(y, bias_);
}

}  // namespace lrq
