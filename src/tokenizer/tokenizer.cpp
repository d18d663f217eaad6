#include "tokenizer/tokenizer.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/gguf_llama.h"
#include "io/mapped_file.h"
#include "tokenizer/formats.h"

namespace lrq {

namespace detail {

// Opened the way weights and configs are (io/mapped_file.h): a FIFO or device given as a
// tokenizer is refused instead of blocking the read forever.
std::string read_binary_file(const std::string& path) { return read_text_file(path); }

}  // namespace detail

namespace {

// A serialized ModelProto starts with its first piece (field 1, length-delimited: byte 0x0A)
// of non-zero length. A llama2.c file starts with max_token_length as int32; even when its low
// byte is 0x0A the protobuf parse fails and the llama2.c parse gets its turn.
bool looks_like_sentencepiece(std::string_view d) {
  return d.size() >= 2 && uint8_t(d[0]) == 0x0A && uint8_t(d[1]) != 0;
}

bool looks_like_llama2c(std::string_view d) {
  if (d.size() < 4) return false;
  int32_t max_len;
  std::memcpy(&max_len, d.data(), 4);
  return max_len > 0 && max_len <= (1 << 16);
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  // Sniffed before reading: a GGUF file is the whole model, and only its metadata is wanted.
  if (gguf::is_gguf_file(path))
    return sentencepiece_from_vocab(gguf::read_spm_vocab(gguf::File::open(path)), path);
  const std::string data = detail::read_binary_file(path);
  const bool sp = looks_like_sentencepiece(data), l2c = looks_like_llama2c(data);
  if (sp && l2c) {
    try {
      return detail::parse_sentencepiece(data, path);
    } catch (const Error&) {
      try {
        return detail::parse_llama2c_tokenizer(data, path);
      } catch (const Error&) {
      }
      throw;  // the SentencePiece error: the likelier reading of this file
    }
  }
  if (sp) return detail::parse_sentencepiece(data, path);
  if (l2c) return detail::parse_llama2c_tokenizer(data, path);
  std::string head;
  for (size_t i = 0; i < data.size() && i < 8; ++i)
    head += fmt::format("{}{:02x}", i ? " " : "", uint8_t(data[i]));
  fail(path, "not a SentencePiece model or llama2.c tokenizer: {} bytes, starting with [{}]",
       data.size(), head);
}

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path) {
  return detail::parse_sentencepiece(detail::read_binary_file(path), path);
}

SpmVocab load_spm_vocab(const std::string& path) {
  if (gguf::is_gguf_file(path)) return gguf::read_spm_vocab(gguf::File::open(path));
  const std::string data = detail::read_binary_file(path);
  if (!looks_like_sentencepiece(data))
    fail(path, "not a SentencePiece .model: GGUF holds SentencePiece (\"llama\") vocabularies only");
  return detail::parse_sentencepiece_vocab(data, path);
}

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path) {
  return detail::parse_llama2c_tokenizer(detail::read_binary_file(path), path);
}

}  // namespace lrq
