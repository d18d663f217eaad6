// The llama architecture in GGUF, as llama.cpp reads it (../shared/docs/GGUF.md, measured): tensor
// names, the RoPE row order of attn_q and attn_k, the model's metadata keys, and the SentencePiece
// vocabulary the tokenizer.ggml.* keys carry. Loading a GGUF as a checkpoint is load_gguf
// (io/checkpoint.h); writing one from a model is formats/gguf_export.h.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"
#include "model/config.h"

namespace lrq {

/// A SentencePiece vocabulary as GGUF stores it: the pieces, scores and piece types
/// (SentencePiece's numbering, which llama.cpp's token types share: 1 normal, 2 unknown, 3
/// control, 4 user-defined, 5 unused, 6 byte), the special ids (-1: none) and the flags that
/// shape encoding.
struct SpmVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  int32_t bos = -1, eos = -1, unk = -1;
  bool add_bos = true, add_eos = false;
  bool add_space_prefix = true;  // SentencePiece's normalizer_spec.add_dummy_prefix
  bool remove_extra_whitespaces = false;
};

namespace gguf {

/// The GGUF name of a Hugging Face tensor name ("model.layers.3.mlp.up_proj.weight" ->
/// "blk.3.ffn_up.weight"); "" when the llama architecture has no such tensor.
std::string llama_name(std::string_view hf);
/// The inverse of llama_name; "" for a name outside the llama architecture lrquant runs.
std::string hf_name(std::string_view gguf);
/// attn_q and attn_k: llama.cpp rotates adjacent pairs (2i, 2i+1), Hugging Face Llama pairs
/// (i, i + head_dim/2), so these rows are stored reordered within each head.
bool rope_permuted(std::string_view hf);
/// The Hugging Face row held by GGUF row r: within a head, GGUF row 2i + j is HF row
/// j * head_dim/2 + i.
int64_t rope_hf_row(int64_t r, int64_t head_dim);
/// The GGUF row holding Hugging Face row r (the inverse of rope_hf_row).
int64_t rope_gguf_row(int64_t r, int64_t head_dim);

/// The general.*, llama.* and tokenizer.ggml.* keys llama.cpp needs for `c` with `vocab`
/// (padded with unused "[PADn]" pieces when the embedding has more rows than the tokenizer).
void set_llama_metadata(Writer& w, const ModelConfig& c, SpmVocab vocab, const std::string& name);
/// The SentencePiece vocabulary of a file whose tokenizer.ggml.model is "llama"; any other
/// tokenizer, or none, is an Error naming the file.
SpmVocab read_spm_vocab(const File& f);

}  // namespace gguf
}  // namespace lrq
