// What the trainer learns in each projection, one class per mode: the effective dense weight
// the differentiable block multiplies by, the map from that weight's gradient dL/dW to the
// trainable tensors' gradients, and the stored layer written at the end (and for evaluation).
//
//   lora        W = W0 + s B A             W0 frozen (dense, or a quantized base's dequantized
//                                          weight: qlora), B [out, r] = 0 and A [r, in] random
//                                          at the start, s = alpha / r. Stored: the dense sum
//                                          (W0 dense) or the quantized base with s B, A as its
//                                          low-rank branch (F16 factors), which eval runs.
//   lords-peft  W = Q (.) (B A)            codes frozen; B, A trained; stored as LoRDS.
//   lords-qat   W = q(W' / S) (.) S        W', B, A trained, S = B A, q() the nearest codebook
//                                          entry with a straight-through gradient
//                                          (ops::lords_ste_backward); stored as LoRDS with the
//                                          codes of the final W' and S.
//
// The effective weights are F32 on the CPU: a frozen quantized base enters the product as its
// dequantized F32 weight (dX through it is then an ordinary GEMM), the LoRDS weight as Q (.) S
// formed once per block. All arithmetic goes through the ops seam.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/lords_linear.h"
#include "formats/packed_linear.h"
#include "model/linear.h"

namespace lrq {

/// One trainable tensor with its gradient and Adam moments, all F32 of one shape.
struct Param {
  std::string name;  // "<layer>.lora_A", ...: the trainer state's tensor names
  Tensor value, grad, m, v;
  double lr_scale = 1.0;  // this tensor's learning rate relative to the run's
};

class ProjParam {
 public:
  virtual ~ProjParam() = default;
  /// The effective weight [out, in] in F32 (a new tensor, or a frozen one shared: read only).
  virtual Tensor weight() const = 0;
  /// Adds the trainable tensors' gradients for dL/dW = dW (F32 [out, in]).
  virtual void backward(const Tensor& dW) = 0;
  virtual std::vector<Param*> params() = 0;
  /// The layer to store (and to evaluate): the trained parameters in the mode's format.
  virtual std::unique_ptr<Linear> export_linear() const = 0;
};

/// LoRA on W0 (F32 [out, in]). `base`: the frozen quantized layer W0 came from (its
/// dequantized weight), exported with the adapter as an extra low-rank part; null: W0 is the
/// dense weight, exported merged. A ~ N(0, 1/in) drawn from `seed`, B = 0.
std::unique_ptr<ProjParam> make_lora(const std::string& layer, Tensor W0,
                                     std::unique_ptr<LowRankLinear> base, int64_t rank,
                                     double alpha, uint64_t seed);
/// LoRDS multiplicative fine-tuning from a LoRDS layer: its codes frozen, B and A trained.
std::unique_ptr<ProjParam> make_lords_peft(const std::string& layer, const LordsLinear& q);
/// LoRDS quantization-aware training from a LoRDS layer: B and A from it, the latent weight W'
/// starting at `W` (F32 [out, in]: the full-precision weight it was quantized from). B and A
/// learn at `scale_lr` times the run's rate (the author's QAT uses 4).
std::unique_ptr<ProjParam> make_lords_qat(const std::string& layer, const LordsLinear& q,
                                          Tensor W, double scale_lr = 1.0);

}  // namespace lrq
