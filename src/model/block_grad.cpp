#include "model/block_grad.h"

#include "backend/ops.h"
#include "model/llama.h"

namespace lrq {

namespace {
const char* const kNames[9] = {
    "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
    "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};

// y = x W^T (+ y when accumulate): the dense projection. For F32 this is the product
// ops::linear runs for an F32 weight (the same gemm call), so forward matches the model's.
void project(const Tensor& x, const Tensor& W, const Tensor& y, bool accumulate = false) {
  ops::gemm(x, false, W, true, y, 1.0, accumulate ? 1.0 : 0.0);
}
// dx (+)= dy W: the input gradient of y = x W^T.
void project_back(const Tensor& dy, const Tensor& W, const Tensor& dx, bool accumulate) {
  ops::gemm(dy, false, W, false, dx, 1.0, accumulate ? 1.0 : 0.0);
}
// dW += dy^T x: the weight gradient of y = x W^T (skipped for a frozen weight).
void weight_grad(const Tensor& dy, const Tensor& x, const Tensor& dW) {
  if (dW.defined()) ops::gemm(dy, true, x, false, dW, 1.0, 1.0);
}
}  // namespace

std::vector<std::pair<std::string, Tensor*>> BlockWeights::named() {
  Tensor* t[9] = {&attn_norm, &mlp_norm, &q, &k, &v, &o, &gate, &up, &down};
  std::vector<std::pair<std::string, Tensor*>> out;
  for (int i = 0; i < 9; ++i) out.emplace_back(kNames[i], t[i]);
  return out;
}

std::vector<std::pair<std::string, const Tensor*>> BlockWeights::named() const {
  std::vector<std::pair<std::string, const Tensor*>> out;
  for (auto& [n, t] : const_cast<BlockWeights*>(this)->named()) out.emplace_back(n, t);
  return out;
}

BlockWeights BlockWeights::zeros_like() const {
  BlockWeights z;
  auto dst = z.named();
  auto src = named();
  for (size_t i = 0; i < src.size(); ++i)
    if (src[i].second->defined())
      *dst[i].second = Tensor::zeros(src[i].second->shape(), src[i].second->dtype(),
                                     src[i].second->device());
  return z;
}

BlockWeights BlockWeights::from_block(const Block& b, DType dtype, Device device) {
  auto as = [&](const Tensor& t) { return t.to(Device::CPU).to(DType::F32).to(dtype).to(device); };
  BlockWeights w;
  w.attn_norm = as(b.attn_norm);
  w.mlp_norm = as(b.mlp_norm);
  w.q = as(b.q->dequantize());
  w.k = as(b.k->dequantize());
  w.v = as(b.v->dequantize());
  w.o = as(b.o->dequantize());
  w.gate = as(b.gate->dequantize());
  w.up = as(b.up->dequantize());
  w.down = as(b.down->dequantize());
  return w;
}

BlockGrad::BlockGrad(const ModelConfig& cfg, BlockWeights w) : cfg_(cfg), w_(std::move(w)) {
  if (cfg_.qk_norm || cfg_.qkv_bias)
    fail("model", "the differentiable block supports the Llama graph only (no q/k norms, no "
                  "q/k/v biases)");
  const int64_t H = cfg_.hidden, I = cfg_.intermediate;
  const Shape want[9] = {{H},           {H},           {cfg_.q_width(), H}, {cfg_.kv_width(), H},
                         {cfg_.kv_width(), H}, {H, cfg_.q_width()}, {I, H}, {I, H}, {H, I}};
  const auto named = w_.named();
  const Tensor& first = *named[0].second;
  for (size_t i = 0; i < named.size(); ++i) {
    const Tensor& t = *named[i].second;
    if (!t.defined() || t.shape() != want[i] || t.dtype() != first.dtype() ||
        t.device() != first.device() ||
        (t.dtype() != DType::F32 && t.dtype() != DType::F64))
      fail("model", "block weight {} is {}, expected {}[{}] like {}", named[i].first,
           t.defined() ? t.str() : "undefined", first.defined() ? dtype_name(first.dtype()) : "F32",
           shape_str(want[i]), first.defined() ? first.str() : "-");
  }
}

Tensor BlockGrad::forward(const Tensor& x) {
  const DType dt = w_.q.dtype();
  const Device dev = w_.q.device();
  if (x.ndim() != 2 || x.dim(1) != cfg_.hidden || x.dtype() != dt || x.device() != dev)
    fail("model", "block input {} must be {}[T, {}] on {}", x.str(), dtype_name(dt), cfg_.hidden,
         device_name(dev));
  const int64_t T = x.dim(0);
  auto buf = [&](int64_t n) { return Tensor::empty({T, n}, dt, dev); };
  x_ = x.clone();

  Tensor h = buf(cfg_.hidden);
  ops::rmsnorm(x_, w_.attn_norm, cfg_.rms_eps, h);
  q_ = buf(cfg_.q_width());
  k_ = buf(cfg_.kv_width());
  v_ = buf(cfg_.kv_width());
  project(h, w_.q, q_);
  project(h, w_.k, k_);
  project(h, w_.v, v_);
  ops::rope(q_, cfg_.n_heads, cfg_.head_dim, 0, cfg_.rope_theta, cfg_.rope_interleaved);
  ops::rope(k_, cfg_.n_kv_heads, cfg_.head_dim, 0, cfg_.rope_theta, cfg_.rope_interleaved);
  att_ = buf(cfg_.q_width());
  lse_ = Tensor::empty({cfg_.n_heads, T}, dt, dev);
  ops::attention_train(q_, k_, v_, cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim, att_, lse_);
  Tensor o = buf(cfg_.hidden);
  project(att_, w_.o, o);
  x1_ = x_.clone();
  ops::add_inplace(x1_, o);

  ops::rmsnorm(x1_, w_.mlp_norm, cfg_.rms_eps, h);
  g_ = buf(cfg_.intermediate);
  u_ = buf(cfg_.intermediate);
  project(h, w_.gate, g_);
  project(h, w_.up, u_);
  Tensor a = buf(cfg_.intermediate);
  ops::silu_mul(g_, u_, a);
  project(a, w_.down, o);
  Tensor y = x1_.clone();
  ops::add_inplace(y, o);
  return y;
}

Tensor BlockGrad::backward(const Tensor& dy, BlockWeights& grads) const {
  if (!x_.defined()) fail("model", "block backward without a forward");
  if (dy.shape() != x_.shape() || dy.dtype() != x_.dtype() || dy.device() != x_.device())
    fail("model", "block output gradient {} does not fit the forward's {}", dy.str(), x_.str());
  const int64_t T = x_.dim(0);
  const DType dt = x_.dtype();
  const Device dev = x_.device();
  auto buf = [&](int64_t n) { return Tensor::empty({T, n}, dt, dev); };

  // MLP: y = x1 + down(silu(gate(h2)) * up(h2)), h2 = rmsnorm(x1).
  Tensor dx1 = dy.clone();  // the residual passes dy through
  Tensor h = buf(cfg_.hidden);
  ops::rmsnorm(x1_, w_.mlp_norm, cfg_.rms_eps, h);
  {
    Tensor a = buf(cfg_.intermediate);
    ops::silu_mul(g_, u_, a);
    weight_grad(dy, a, grads.down);
  }
  Tensor dg = buf(cfg_.intermediate), du = buf(cfg_.intermediate);
  project_back(dy, w_.down, dg, false);                  // da, then dgate in its place
  ops::silu_mul_backward(g_, u_, dg, dg, du);
  weight_grad(dg, h, grads.gate);
  weight_grad(du, h, grads.up);
  Tensor dh = buf(cfg_.hidden);
  project_back(dg, w_.gate, dh, false);
  project_back(du, w_.up, dh, true);
  ops::rmsnorm_backward(x1_, w_.mlp_norm, cfg_.rms_eps, dh, dh, grads.mlp_norm);
  ops::add_inplace(dx1, dh);

  // Attention: x1 = x + o(attention(rope(q(h1)), rope(k(h1)), v(h1))), h1 = rmsnorm(x).
  weight_grad(dx1, att_, grads.o);
  Tensor datt = buf(cfg_.q_width());
  project_back(dx1, w_.o, datt, false);
  Tensor dq = buf(cfg_.q_width()), dk = buf(cfg_.kv_width()), dv = buf(cfg_.kv_width());
  ops::attention_backward(q_, k_, v_, att_, lse_, datt, cfg_.n_heads, cfg_.n_kv_heads,
                          cfg_.head_dim, dq, dk, dv);
  ops::rope_backward(dq, cfg_.n_heads, cfg_.head_dim, 0, cfg_.rope_theta, cfg_.rope_interleaved);
  ops::rope_backward(dk, cfg_.n_kv_heads, cfg_.head_dim, 0, cfg_.rope_theta,
                     cfg_.rope_interleaved);
  ops::rmsnorm(x_, w_.attn_norm, cfg_.rms_eps, h);
  weight_grad(dq, h, grads.q);
  weight_grad(dk, h, grads.k);
  weight_grad(dv, h, grads.v);
  project_back(dq, w_.q, dh, false);
  project_back(dk, w_.k, dh, true);
  project_back(dv, w_.v, dh, true);
  ops::rmsnorm_backward(x_, w_.attn_norm, cfg_.rms_eps, dh, dh, grads.attn_norm);
  ops::add_inplace(dx1, dh);
  return dx1;
}

}  // namespace lrq
