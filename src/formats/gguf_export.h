// Writing a model as a GGUF file that llama.cpp runs (conventions: io/gguf_llama.h, docs/FORMAT.md
// "GGUF"). A dense model becomes a float GGUF, or one whose projections are quantized to a ggml
// block type with ggml's reference round-to-nearest; a model quantized by lrquant is transcoded
// bit for bit where its stored format is a ggml block type, and refused where it is not.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "io/gguf.h"
#include "io/gguf_llama.h"
#include "model/llama.h"

namespace lrq {

struct GgufExportOptions {
  /// "auto": every tensor in its stored float type; "f32", "f16", "bf16": every tensor but the
  /// norms (always F32) in that type; "q8_0", "q4_0", "q4_1": the seven projections of a dense
  /// model in that block type, the embedding and LM head as stored.
  std::string type = "auto";
  std::string name;  // general.name
  /// When set, the low-rank branches (FLRQ, `+lr`) go to this llama.cpp LoRA adapter GGUF and the
  /// base file holds only the quantized residuals; without it a layer with a branch is refused.
  std::string lora_out;
};

struct GgufExportSummary {
  std::map<std::string, int64_t> tensors;  // ggml type name -> tensor count
  int64_t transcoded = 0;                  // lrquant layers copied bit for bit
  int64_t projection_weights = 0;          // weights of the seven projections per block
  uint64_t projection_bytes = 0;           // their bytes in the file
  uint64_t file_bytes = 0;
  int64_t adapter_layers = 0;              // layers whose branch went to the adapter
  int64_t adapter_max_rank = 0;
  uint64_t adapter_bytes = 0;
};

/// The ggml type a stored layer is exactly, or why it is none: "" and *type set when `layer` is a
/// packed layer of 4-bit symmetric (Q4_0), 4-bit affine (Q4_1) or 8-bit symmetric (Q8_0) groups of
/// 32, or a ggml layer (its K-quant type), with no input transform and no low-rank branch (or,
/// with `lora`, a branch the adapter takes); otherwise the reason, naming a recipe that would
/// export.
std::string exact_gguf_type(const Linear& layer, gguf::Type* type, bool lora = false);

/// Writes `model` (on the CPU) with the tokenizer `vocab` to `out` atomically. Architectures other
/// than Llama/Mistral without a sliding window, layers with no exact ggml type, and a block
/// --type for an already quantized model are Errors naming the model or the layer.
GgufExportSummary export_gguf(const Model& model, const SpmVocab& vocab, const GgufExportOptions& o,
                              const std::string& out);

}  // namespace lrq
