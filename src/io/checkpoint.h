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
  /// Tokenizer file found beside the weights ("" if none): tokenizer.model in a folder.
  std::string tokenizer_path;

  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  /// Throws Error("<file>: missing tensor <name>") if absent.
  const Tensor& get(const std::string& name) const;
};

/// Parses and validates a Hugging Face config.json. Unsupported architectures or features are
/// an Error naming the file and the field ("rope_scaling.rope_type 'yarn' is not supported").
ModelConfig parse_hf_config(const std::string& path);

/// Loads a Hugging Face folder or a llama2.c .bin. Validates every tensor the architecture
/// needs against the config (presence, shape, dtype).
Checkpoint load_checkpoint(const std::string& path);

/// Reads a llama2.c checkpoint (format in shared/models/stories260K/README.md).
Checkpoint load_llama2c(const std::string& path);

}  // namespace lrq
