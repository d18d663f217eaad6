#include "model/model_grad.h"

#include "backend/ops.h"
#include "core/error.h"

namespace lrq {

ModelGrad::ModelGrad(const ModelConfig& cfg, LmWeights w, BlockParams& blocks)
    : cfg_(cfg), w_(std::move(w)), blocks_(blocks) {
  const Tensor& e = w_.embed;
  if (!e.defined() || (e.dtype() != DType::F32 && e.dtype() != DType::F64) ||
      e.shape() != Shape{cfg_.vocab, cfg_.hidden})
    fail("model", "embedding {} must be F32 or F64 [{}, {}]", e.defined() ? e.str() : "undefined",
         cfg_.vocab, cfg_.hidden);
  auto same = [&](const Tensor& t, const Shape& s, const char* what) {
    if (!t.defined() || t.dtype() != e.dtype() || t.device() != e.device() || t.shape() != s)
      fail("model", "{} {} must be {}[{}] like the embedding", what,
           t.defined() ? t.str() : "undefined", dtype_name(e.dtype()), shape_str(s));
  };
  same(w_.final_norm, {cfg_.hidden}, "final norm");
  if (cfg_.tied_embeddings && w_.head.defined())
    fail("model", "the head is tied to the embedding: no separate head weight");
  if (!cfg_.tied_embeddings) same(w_.head, {cfg_.vocab, cfg_.hidden}, "LM head");
}

Tensor ModelGrad::forward_blocks(std::span<const int32_t> ids, std::vector<Tensor>* inputs) {
  const int64_t T = int64_t(ids.size());
  const DType dt = w_.embed.dtype();
  const Device dev = w_.embed.device();
  Tensor x = Tensor::empty({T, cfg_.hidden}, dt, dev);
  if (dt == DType::F32) {
    ops::embedding(w_.embed, ids, x);
  } else {
    // The embedding op widens to F32 (inference); the F64 checks gather rows as they are.
    for (int64_t t = 0; t < T; ++t) {
      const int32_t id = ids[size_t(t)];
      if (id < 0 || id >= cfg_.vocab)
        fail("input", "token id {} is outside the vocabulary [0, {})", id, cfg_.vocab);
      x.rows(t, t + 1).copy_from(w_.embed.rows(id, id + 1));
    }
  }
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    if (inputs) inputs->push_back(x);
    // One BlockGrad per block: its kept activations die with it at the end of the iteration.
    BlockGrad b(cfg_, blocks_.weights(l));
    x = b.forward(x);
  }
  return x;
}

double ModelGrad::loss(std::span<const int32_t> tokens) {
  if (tokens.size() < 2) fail("input", "a training window needs at least 2 tokens");
  const int64_t T = int64_t(tokens.size()) - 1;
  Tensor x = forward_blocks(tokens.first(size_t(T)), nullptr);
  Tensor n = Tensor::empty({T, cfg_.hidden}, x.dtype(), x.device());
  ops::rmsnorm(x, w_.final_norm, cfg_.rms_eps, n);
  Tensor logits = Tensor::empty({T, cfg_.vocab}, x.dtype(), x.device());
  ops::gemm(n, false, head_weight(), true, logits);
  return ops::cross_entropy(logits, tokens.subspan(1), Tensor{}, 1.0);
}

double ModelGrad::loss_and_grad(std::span<const int32_t> tokens, double scale,
                                LmWeights& grads) {
  if (tokens.size() < 2) fail("input", "a training window needs at least 2 tokens");
  const int64_t T = int64_t(tokens.size()) - 1;
  const auto ids = tokens.first(size_t(T));
  std::vector<Tensor> inputs;
  inputs.reserve(size_t(cfg_.n_layers));
  Tensor x = forward_blocks(ids, &inputs);

  // Head: logits = rmsnorm(x) H^T, loss = cross-entropy; the logits' buffer becomes dlogits.
  Tensor n = Tensor::empty({T, cfg_.hidden}, x.dtype(), x.device());
  ops::rmsnorm(x, w_.final_norm, cfg_.rms_eps, n);
  Tensor logits = Tensor::empty({T, cfg_.vocab}, x.dtype(), x.device());
  const Tensor& H = head_weight();
  ops::gemm(n, false, H, true, logits);
  const double nll = ops::cross_entropy(logits, tokens.subspan(1), logits, scale);
  const Tensor& dH = cfg_.tied_embeddings ? grads.embed : grads.head;
  if (dH.defined()) ops::gemm(logits, true, n, false, dH, 1.0, 1.0);
  Tensor dx = Tensor::empty({T, cfg_.hidden}, x.dtype(), x.device());
  ops::gemm(logits, false, H, false, dx);
  logits = Tensor{};
  ops::rmsnorm_backward(x, w_.final_norm, cfg_.rms_eps, dx, dx, grads.final_norm);

  // Blocks, last first, each recomputed from its kept input.
  for (int64_t l = cfg_.n_layers - 1; l >= 0; --l) {
    BlockGrad b(cfg_, blocks_.weights(l));
    b.forward(inputs[size_t(l)]);
    inputs[size_t(l)] = Tensor{};
    BlockWeights g = blocks_.grads(l);
    dx = b.backward(dx, g);
    blocks_.grads_done(l, g);
  }
  if (grads.embed.defined()) ops::embedding_backward(ids, dx, grads.embed);
  return nll;
}

}  // namespace lrq
