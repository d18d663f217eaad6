#include "tokenizer/bpe.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace lrq::detail {

void MergeVocab::add(std::string_view piece, Entry e) {
  if (!map_.emplace(std::string(piece), e).second) return;
  max_bytes_ = std::max(max_bytes_, piece.size());
  if (!space_.empty()) {
    std::string_view rest = piece;
    while (rest.starts_with(space_)) rest.remove_prefix(space_.size());
    if (rest.find(space_) != std::string_view::npos) words_independent_ = false;
  }
}

const MergeVocab::Entry* MergeVocab::find(std::string_view piece) const {
  auto it = map_.find(piece);
  return it == map_.end() ? nullptr : &it->second;
}

namespace {

// Merges runs of symbols, reusing its buffers from one run (word) to the next.
class Merger {
 public:
  Merger(std::string_view text, const MergeVocab& vocab, SplitLog* splits)
      : text_(text), vocab_(vocab), splits_(splits) {}

  /// Merges symbols [0, n) of `s` and appends the result to `out`.
  void run(BpeSymbol* s, size_t n, std::vector<BpeSymbol>& out) {
    if (n < 2) {
      out.insert(out.end(), s, s + n);
      return;
    }
    sym_ = s;
    prev_.resize(n);
    next_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      prev_[i] = int32_t(i) - 1;
      next_[i] = i + 1 < n ? int32_t(i + 1) : -1;
    }
    heap_.clear();
    for (size_t i = 1; i < n; ++i) consider(int32_t(i - 1), int32_t(i));

    while (!heap_.empty()) {
      std::pop_heap(heap_.begin(), heap_.end(), worse);
      const Candidate c = heap_.back();
      heap_.pop_back();
      BpeSymbol &a = sym_[c.left], &b = sym_[c.right];
      // Symbols only grow, and a symbol merged into its left neighbour drops to size 0, so a
      // candidate is live exactly when its pair is still adjacent with the sizes it was made of.
      if (a.size == 0 || b.size == 0 || next_[c.left] != c.right || a.size + b.size != c.size)
        continue;
      a.size = c.size;
      a.id = c.id;
      b.size = 0;
      next_[c.left] = next_[c.right];
      if (next_[c.right] >= 0) prev_[next_[c.right]] = c.left;
      consider(prev_[c.left], c.left);
      consider(c.left, next_[c.left]);
    }
    for (int32_t i = 0; i >= 0; i = next_[i]) out.push_back(sym_[i]);
  }

 private:
  struct Candidate {
    float score;
    int32_t left, right;
    uint32_t size;  // bytes of the merged piece: tells a stale candidate from a live one
    int32_t id;
  };
  // Highest score first; on ties the leftmost pair, as SentencePiece and llama2.c both do.
  static bool worse(const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }

  void consider(int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const BpeSymbol &a = sym_[l], &b = sym_[r];
    if (a.frozen || b.frozen) return;
    const uint32_t size = a.size + b.size;
    if (size > vocab_.max_piece_bytes()) return;
    const std::string_view piece = text_.substr(a.begin, size);
    const MergeVocab::Entry* e = vocab_.find(piece);
    if (!e) return;
    heap_.push_back({e->score, l, r, size, e->id});
    std::push_heap(heap_.begin(), heap_.end(), worse);
    if (splits_ && e->record_split)
      (*splits_)[std::string(piece)] = {std::string(text_.substr(a.begin, a.size)),
                                        std::string(text_.substr(b.begin, b.size))};
  }

  std::string_view text_;
  const MergeVocab& vocab_;
  SplitLog* splits_;
  BpeSymbol* sym_ = nullptr;
  std::vector<int32_t> prev_, next_;
  std::vector<Candidate> heap_;
};

}  // namespace

std::vector<BpeSymbol> bpe_merge(std::string_view text, std::vector<BpeSymbol> symbols,
                                 const MergeVocab& vocab, SplitLog* splits) {
  const size_t n = symbols.size();
  LRQ_ASSERT(text.size() <= std::numeric_limits<uint32_t>::max());
  for (size_t i = 1; i < n; ++i)
    LRQ_ASSERT(symbols[i].begin == symbols[i - 1].begin + symbols[i - 1].size);

  std::vector<BpeSymbol> out;
  out.reserve(n);
  Merger merger(text, vocab, splits);
  if (!vocab.words_independent() || splits) {
    merger.run(symbols.data(), n, out);
    return out;
  }
  const std::string_view space = vocab.space();
  auto piece = [&](size_t i) { return text.substr(symbols[i].begin, symbols[i].size); };
  size_t word = 0;
  for (size_t i = 1; i <= n; ++i) {
    if (i == n || (piece(i).starts_with(space) && !piece(i - 1).ends_with(space))) {
      merger.run(symbols.data() + word, i - word, out);
      word = i;
    }
  }
  return out;
}

size_t valid_utf8_char(std::string_view s) {
  auto trail = [&](size_t i) { return i < s.size() && (uint8_t(s[i]) & 0xC0) == 0x80; };
  const uint8_t c = uint8_t(s[0]);
  if (c < 0x80) return 1;
  uint32_t cp;
  size_t len;
  if ((c & 0xE0) == 0xC0) {
    len = 2;
    cp = c & 0x1Fu;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    cp = c & 0x0Fu;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    cp = c & 0x07u;
  } else {
    return 0;
  }
  for (size_t i = 1; i < len; ++i) {
    if (!trail(i)) return 0;
    cp = (cp << 6) | (uint8_t(s[i]) & 0x3Fu);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return 0;
  return len;
}

int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  auto hex = [](char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]), lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace lrq::detail
