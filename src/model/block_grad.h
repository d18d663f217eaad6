// A differentiable Llama block: the forward of Model::block_forward from position 0 that keeps
// what its backward needs, and the backward that gives dL/dX and the gradients of the seven
// projection weights and the two norm weights. Block-reconstruction methods (LRQ) train on it;
// the gradient tests check it against finite differences and an independent autograd.
//
// Kept by forward() for backward(): the input x, q and k after RoPE, v, the attention output
// and its row log-sum-exp (lse), the mid-block residual x1, and the MLP's gate and up
// activations. Recomputed by backward(): both RMSNorm outputs (one elementwise pass over
// x and x1) and silu(gate) * up; the attention probabilities are never stored (rebuilt from
// lse, tile by tile on the GPU). docs/DECISIONS.md ("The differentiable block") says why.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace lrq {

struct Block;

/// One block's weights as dense tensors, all of one dtype (F32 to train, F64 for gradient
/// checks) on one device; projections as stored, out x in (y = x W^T). The same struct holds
/// gradients (an undefined gradient is not computed: a frozen weight).
struct BlockWeights {
  Tensor attn_norm, mlp_norm;          // [hidden]
  Tensor q, k, v, o, gate, up, down;  // [out, in]

  /// The nine tensors under their checkpoint names ("input_layernorm.weight",
  /// "self_attn.q_proj.weight", ...), norms first, then projections in dependency order.
  std::vector<std::pair<std::string, Tensor*>> named();
  std::vector<std::pair<std::string, const Tensor*>> named() const;
  /// Zero tensors of the same shapes, dtype and device (gradient accumulators).
  BlockWeights zeros_like() const;
  /// A model block's effective weights (dequantized where quantized) as `dtype` on `device`.
  static BlockWeights from_block(const Block& b, DType dtype, Device device);
};

class BlockGrad {
 public:
  /// cfg: a Llama graph (Qwen3's q/k norms and Qwen2's q/k/v biases are refused: an Error);
  /// w: every tensor defined, of one dtype (F32 or F64) and device, shaped for cfg.
  BlockGrad(const ModelConfig& cfg, BlockWeights w);

  const BlockWeights& weights() const { return w_; }
  BlockWeights& weights() { return w_; }

  /// y = block(x) for x (T x hidden, the weights' dtype and device) at positions 0..T-1, as a
  /// new tensor. On the CPU in F32, the same bits as Model::block_forward with the same (dense
  /// F32) weights; on the GPU the attention is attention_train's tiled kernel instead of the
  /// inference paths (equal to rounding). Keeps the activations of this call for backward()
  /// (replacing an earlier call's).
  Tensor forward(const Tensor& x);
  /// dL/dx for dy = dL/dy at the last forward's y; adds dL/dW into each defined tensor of
  /// `grads` (+=, so gradients over a batch of windows accumulate).
  Tensor backward(const Tensor& dy, BlockWeights& grads) const;

 private:
  ModelConfig cfg_;
  BlockWeights w_;
  // The last forward's activations (see the top of this file).
  Tensor x_, q_, k_, v_, att_, lse_, x1_, g_, u_;
};

}  // namespace lrq
