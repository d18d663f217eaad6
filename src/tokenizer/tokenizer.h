// Tokenizers: one interface, one implementation per file format.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lrq {

struct SpmVocab;  // io/gguf_llama.h

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// Text (UTF-8, n bytes) to ids. `add_bos` prepends the BOS id (if the tokenizer has one).
  /// Const and free of shared state: safe to call from several threads at once.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  /// Ids to text. BOS/EOS decode to nothing and the dummy-prefix space at the start is dropped
  /// (SentencePiece: from the first piece; llama2.c: from the piece after a BOS); byte tokens
  /// are reassembled into UTF-8. An id outside [0, vocab_size()) is an Error.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 if none
  virtual int32_t eos_id() const = 0;  // -1 if none
  /// The piece string of an id (for inspection and debugging).
  virtual std::string piece(int32_t id) const = 0;
};

/// SentencePiece `.model`, llama2.c `tokenizer.bin`, or the vocabulary inside a GGUF file,
/// chosen by content. Errors name the file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

/// SentencePiece BPE model (protobuf ModelProto) with identity normalization; unigram models
/// and other normalization rules are refused with an Error.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path);
/// The vocabulary of a SentencePiece `.model` (or of a GGUF file's tokenizer.ggml.* keys) as GGUF
/// stores it. A model lrquant cannot encode with, or one whose options GGUF cannot express
/// (escape_whitespaces off), is an Error naming the file.
SpmVocab load_spm_vocab(const std::string& path);
/// A SentencePiece tokenizer over a GGUF-style vocabulary: BPE, byte fallback when it has byte
/// pieces, BOS/EOS the control pieces at its ids. Errors name `path`.
std::unique_ptr<Tokenizer> sentencepiece_from_vocab(const SpmVocab& v, const std::string& path);
/// llama2.c tokenizer.bin (max_token_length, then score/length/bytes per token).
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path);

}  // namespace lrq
