// Loading a model checkpoint from disk, whatever its layout: a Hugging Face folder
// (config.json + safetensors, possibly quantized by lrquant) or a llama2.c .bin file.
//
// The result names tensors the Hugging Face way ("model.layers.0.self_attn.q_proj.weight"),
// so the model code has one vocabulary whatever the source.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace lrq {

struct Checkpoint {
  std::string path;  // folder or .bin file, for messages
  ModelConfig config;
  /// Weight tensors by Hugging Face name; CPU views of memory-mapped data.
  std::map<std::string, Tensor> tensors;
  /// Which file each tensor came from (for error messages).
  std::map<std::string, std::string> tensor_file;
  /// The `quantization_config` object of config.json when lrquant wrote the folder, else null.
  nlohmann::json quantization;
  /// Tokenizer file found beside the weights ("" if none): tokenizer.model in a folder, the
  /// GGUF file itself (its tokenizer.ggml.* keys).
  std::string tokenizer_path;
  /// GGUF: each tensor's type in the file ("q4_K", "f16"), where block types were decoded to F32.
  std::map<std::string, std::string> stored_type;

  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  /// Throws Error("<file>: missing tensor <name>") if absent.
  const Tensor& get(const std::string& name) const;
};

/// Parses and validates a Hugging Face config.json. Unsupported architectures or features are
/// an Error naming the file and the field ("rope_scaling.rope_type 'yarn' is not supported").
/// Also reads tokenizer_config.json beside it for add_bos (default: true for Llama and Mistral,
/// false for Qwen, whose tokenizers add no BOS). eos_token_id may be a list: its first id is
/// taken. A `quantization_config` must have quant_method "lrquant".
ModelConfig parse_hf_config(const std::string& path);
/// Same, also returning the `quantization_config` object (null if absent) in `*quantization`.
ModelConfig parse_hf_config(const std::string& path, nlohmann::json* quantization);

/// Loads a Hugging Face folder, a GGUF file or a llama2.c .bin. Validates every tensor the architecture
/// needs against the config (presence, shape, float dtype); in an lrquant-quantized folder the
/// `<layer>.weight` of every layer in quantization_config.layers is left to the quantized
/// loader. config.dtype is set to the dtype actually stored for the token embedding.
Checkpoint load_checkpoint(const std::string& path);

/// Reads a GGUF file of the llama architecture (io/gguf_llama.h): the config from its llama.*
/// keys, tensors under their Hugging Face names with attn_q/attn_k rows back in rotate_half
/// order; F32/F16/BF16 tensors are views of the mapping, block types (Q4_0, Q8_0, the K-quants)
/// are decoded to F32. tokenizer_path is the file (its vocabulary is in the metadata).
Checkpoint load_gguf(const std::string& path);

/// Reads a llama2.c checkpoint (format in shared/models/stories260K/README.md) as zero-copy
/// views; the file size must match the header exactly. wq/wk keep llama2.c's interleaved rotary
/// layout (config.rope_interleaved). tokenizer_path: tok<vocab>.bin or tokenizer.bin beside it.
Checkpoint load_llama2c(const std::string& path);

}  // namespace lrq
