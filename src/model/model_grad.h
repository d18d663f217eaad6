// The whole model as a differentiable function: token embeddings, every block (BlockGrad), the
// final RMSNorm, the tied or untied LM head and the cross-entropy of next-token prediction, with
// the backward pass that gives the gradients of all of them. Trainers (src/train/) build on it;
// the gradient tests check it against finite differences in F64.
//
// Activation checkpointing per block: forward keeps only each block's input (T x hidden per
// block) and the last block's output; backward recomputes one block's forward at a time from
// its kept input (BlockGrad keeps that block's activations for its own backward, then they are
// dropped) before differentiating it. So a window costs n_layers x T x hidden floats plus one
// block's activations and one T x vocab logits matrix, instead of every block's activations, for
// one extra block forward each. docs/DECISIONS.md ("Whole-model training") gives the numbers.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "model/block_grad.h"
#include "model/config.h"

namespace lrq {

/// The weights around the blocks, all of one dtype (F32 to train, F64 for gradient checks) on one
/// device. The same struct holds gradients: an undefined gradient is a frozen weight.
struct LmWeights {
  Tensor embed;       // [vocab, hidden]
  Tensor final_norm;  // [hidden]
  Tensor head;        // [vocab, hidden]; undefined when tied (the head is `embed`)
};

/// Where the blocks' weights come from, and where their gradients go. A trainer's parameters
/// are not always the dense weights the block multiplies by (a LoRA adapter, LoRDS scales): it
/// hands out the effective dense weights of one block at a time and folds dL/dW back into its
/// own parameters, so only one block's dense weights and weight gradients exist at once.
class BlockParams {
 public:
  virtual ~BlockParams() = default;
  /// Block `layer`'s effective weights (every tensor defined), in the pass's dtype and device.
  /// Called twice per window: in the forward and in the backward's recompute.
  virtual BlockWeights weights(int64_t layer) = 0;
  /// Tensors that block `layer`'s backward adds dL/dW into (+=); undefined ones are frozen.
  virtual BlockWeights grads(int64_t layer) = 0;
  /// Called once per window after block `layer`'s backward with the tensors grads() gave.
  virtual void grads_done(int64_t layer, BlockWeights& g) = 0;
};

/// Blocks held as dense weights with persistent gradient tensors (full fine-tuning; the
/// gradient tests). grads() hands out `g` itself, so gradients accumulate across windows.
class DenseBlocks final : public BlockParams {
 public:
  std::vector<BlockWeights> w, g;
  BlockWeights weights(int64_t layer) override { return w.at(layer); }
  BlockWeights grads(int64_t layer) override { return g.at(layer); }
  void grads_done(int64_t, BlockWeights&) override {}
};

class ModelGrad {
 public:
  /// cfg: a Llama graph (BlockGrad's restrictions); w: embed and final_norm defined, head
  /// defined exactly when cfg.tied_embeddings is false, all of one dtype (F32 or F64).
  ModelGrad(const ModelConfig& cfg, LmWeights w, BlockParams& blocks);

  const LmWeights& weights() const { return w_; }
  LmWeights& weights() { return w_; }

  /// Next-token loss of one window: tokens holds T + 1 ids, the model reads tokens[0..T) from
  /// position 0 and predicts tokens[1..T]; a negative target is not scored. Returns the sum of
  /// the scored predictions' negative log-likelihoods (nats, accumulated in double).
  double loss(std::span<const int32_t> tokens);
  /// loss() and its gradient: adds scale * d(sum NLL)/d(weight) into every defined tensor of
  /// `grads` (+=, so windows accumulate) and, through the BlockParams, into the blocks'.
  /// scale = 1 / (scored tokens of the whole step) makes it the gradient of the mean.
  double loss_and_grad(std::span<const int32_t> tokens, double scale, LmWeights& grads);

 private:
  // Embeds tokens[0..T) and runs every block, keeping each block's input in `inputs` when given.
  Tensor forward_blocks(std::span<const int32_t> ids, std::vector<Tensor>* inputs);
  const Tensor& head_weight() const { return w_.head.defined() ? w_.head : w_.embed; }

  ModelConfig cfg_;
  LmWeights w_;
  BlockParams& blocks_;
};

}  // namespace lrq
