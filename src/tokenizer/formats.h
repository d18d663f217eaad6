// Parsers of the tokenizer file formats, from bytes already read (errors name `path`).
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"

namespace lrq::detail {

/// Reads a whole file. Throws Error("<path>: ...") if it cannot be read.
std::string read_binary_file(const std::string& path);

std::unique_ptr<Tokenizer> parse_sentencepiece(std::string_view data, const std::string& path);
SpmVocab parse_sentencepiece_vocab(std::string_view data, const std::string& path);
std::unique_ptr<Tokenizer> parse_llama2c_tokenizer(std::string_view data, const std::string& path);

}  // namespace lrq::detail
