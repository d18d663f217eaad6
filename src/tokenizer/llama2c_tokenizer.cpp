// llama2.c `tokenizer.bin`: int32 max_token_length, then for every token a float32 merge score,
// an int32 byte length and the bytes (little-endian). Ids 0, 1, 2 are <unk>, <s>, </s>; ids
// 3..258 are the byte tokens <0x00>..<0xFF>. Encoding and decoding follow llama2.c's run.c,
// with its O(n^2) merge loop replaced by the equivalent priority-queue merge, and three choices
// where run.c is silent or unsafe: BOS takes no part in merges (run.c lets it, but no real
// vocabulary has a piece starting with its string "\n<s>\n"), a vocabulary without " " gets
// the dummy prefix as byte token <0x20> (run.c would emit id -1), and BOS/EOS decode to nothing.
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/formats.h"

namespace lrq {
namespace {

using detail::BpeSymbol;
using detail::MergeVocab;

constexpr int32_t kBos = 1, kEos = 2, kFirstByteToken = 3;

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(std::vector<std::string> vocab, const std::vector<float>& scores,
                   std::string path)
      : path_(std::move(path)), vocab_(std::move(vocab)), vocab_ids_(" ") {
    for (size_t i = 0; i < vocab_.size(); ++i)
      vocab_ids_.add(vocab_[i], {int32_t(i), scores[i], false});
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return int32_t(vocab_.size()); }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  std::string piece(int32_t id) const override {
    if (id < 0 || id >= vocab_size())
      fail(path_, "id {} is outside the vocabulary [0, {})", id, vocab_size());
    return vocab_[id];
  }

 private:
  int32_t find(std::string_view piece) const {
    const MergeVocab::Entry* e = vocab_ids_.find(piece);
    return e ? e->id : -1;
  }

  std::string path_;
  std::vector<std::string> vocab_;
  MergeVocab vocab_ids_;  // every token can be a merge result, as in run.c
};

std::vector<int32_t> Llama2cTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos) out.push_back(kBos);
  if (text.empty()) return out;

  // Symbols are the tokens' own strings laid back to back in `work`: run.c merges two tokens
  // when the concatenation of their strings is a token, byte tokens ("<0x41>") included.
  std::string work;
  std::vector<BpeSymbol> symbols;
  auto push = [&](int32_t id) {
    symbols.push_back({uint32_t(work.size()), uint32_t(vocab_[id].size()), id, false});
    work += vocab_[id];
    if (work.size() > std::numeric_limits<uint32_t>::max() / 2)
      fail(path_, "cannot encode a text of {} bytes", text.size());
  };
  auto push_bytes = [&](std::string_view bytes) {
    for (char c : bytes) push(kFirstByteToken + uint8_t(c));
  };

  const int32_t space = find(" ");  // the dummy prefix
  if (space >= 0)
    push(space);
  else
    push_bytes(" ");
  // run.c's grouping: a byte and the continuation bytes after it, at most 4 bytes in all.
  for (size_t i = 0; i < text.size();) {
    size_t len = 1;
    while (len < 4 && i + len < text.size() && (uint8_t(text[i + len]) & 0xC0) == 0x80) ++len;
    const std::string_view ch = text.substr(i, len);
    if (const int32_t id = find(ch); id >= 0)
      push(id);
    else
      push_bytes(ch);
    i += len;
  }

  symbols = detail::bpe_merge(work, std::move(symbols), vocab_ids_);
  for (const BpeSymbol& s : symbols) out.push_back(s.id);
  return out;
}

std::string Llama2cTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  int32_t prev = -1;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      fail(path_, "cannot decode id {}: outside the vocabulary [0, {})", id, vocab_size());
    const int32_t before = prev;
    prev = id;
    if (id == kBos || id == kEos) continue;
    std::string_view p = vocab_[id];
    // SentencePiece's decoder drops the dummy-prefix space of the first token after BOS.
    if (before == kBos && p.starts_with(' ')) p.remove_prefix(1);
    if (const int b = detail::parse_byte_piece(p); b >= 0)
      text += char(b);
    else
      text += p;
  }
  return text;
}

}  // namespace

std::unique_ptr<Tokenizer> detail::parse_llama2c_tokenizer(std::string_view data,
                                                           const std::string& path) {
  auto read_i32 = [&](size_t at) {
    int32_t v;
    std::memcpy(&v, data.data() + at, 4);
    return v;
  };
  if (data.size() < 4) fail(path, "llama2.c tokenizer: file of {} bytes is too short", data.size());
  const int32_t max_len = read_i32(0);
  if (max_len <= 0 || max_len > (1 << 16))
    fail(path, "llama2.c tokenizer: max_token_length {} is out of range", max_len);

  std::vector<std::string> vocab;
  std::vector<float> scores;
  for (size_t pos = 4; pos < data.size();) {
    const size_t i = vocab.size();
    if (data.size() - pos < 8)
      fail(path, "llama2.c tokenizer: token {} at byte {} is truncated", i, pos);
    float score;
    std::memcpy(&score, data.data() + pos, 4);
    const int32_t len = read_i32(pos + 4);
    pos += 8;
    if (std::isnan(score)) fail(path, "llama2.c tokenizer: token {} has a NaN score", i);
    if (len < 0 || len > max_len)
      fail(path, "llama2.c tokenizer: token {} has length {} (max_token_length {})", i, len,
           max_len);
    if (data.size() - pos < size_t(len))
      fail(path, "llama2.c tokenizer: token {} at byte {} is truncated", i, pos - 8);
    vocab.emplace_back(data.substr(pos, size_t(len)));
    scores.push_back(score);
    pos += size_t(len);
  }
  // run.c maps byte b to token b + 3 without looking: make sure that is what those tokens are.
  if (vocab.size() < size_t(kFirstByteToken + 256))
    fail(path, "llama2.c tokenizer: {} tokens, fewer than the 3 special and 256 byte tokens",
         vocab.size());
  for (int b = 0; b < 256; ++b)
    if (parse_byte_piece(vocab[kFirstByteToken + b]) != b)
      fail(path, "llama2.c tokenizer: token {} is {:?}, expected <0x{:02X}>", kFirstByteToken + b,
           vocab[kFirstByteToken + b], b);
  return std::make_unique<Llama2cTokenizer>(std::move(vocab), scores, path);
}

}  // namespace lrq
