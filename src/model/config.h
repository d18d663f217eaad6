// ModelConfig: everything the forward pass needs to know about an architecture, independent of
// where it was loaded from (Hugging Face config.json or a llama2.c header).
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace lrq {

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // as named in config.json
  std::string model_type = "llama";               // llama, mistral, qwen2, qwen3, llama2c
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab = 0;
  int64_t max_positions = 0;
  int64_t sliding_window = 0;  // 0 = none; contexts longer than this are refused
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool rope_interleaved = false;  // llama2.c pairs (2i,2i+1); HF rotate_half pairs (i,i+d/2)
  bool tied_embeddings = false;
  bool qkv_bias = false;  // Qwen2
  bool qk_norm = false;   // Qwen3: per-head RMSNorm on q and k before RoPE
  int32_t bos_id = 1;     // -1: none
  int32_t eos_id = 2;     // -1: none
  bool add_bos = true;    // prepend BOS when encoding a text
  DType dtype = DType::BF16;  // dtype of the stored weights

  int64_t q_width() const { return n_heads * head_dim; }
  int64_t kv_width() const { return n_kv_heads * head_dim; }
};

}  // namespace lrq
