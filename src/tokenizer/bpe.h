// Greedy BPE merging shared by the SentencePiece and llama2.c tokenizers. Both merge, again and
// again, the adjacent pair whose concatenation is a vocabulary piece with the highest score
// (the leftmost such pair on ties). A priority queue over a linked list of symbols does this in
// O(n log n); rescanning all pairs after every merge (llama2.c) is O(n^2) and takes minutes on a
// 1 MB text.
//
// Words: when every piece is (space)* followed by a space-free rest, as training that splits
// on whitespace produces, no merge can join a non-space symbol to a following space symbol.
// The text then falls into independent words at those points, and merging word by word gives
// exactly the merges of the whole text (each word sees its merges in the same order), with
// small cache-resident queues instead of one queue of a million pairs.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lrq::detail {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
/// Hash map keyed by std::string that can be searched with a std::string_view.
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

/// The pieces a merge may produce, with their ids and merge scores.
class MergeVocab {
 public:
  /// `space` is the tokenizer's word-initial space ("▁" for SentencePiece, " " for llama2.c).
  explicit MergeVocab(std::string_view space) : space_(space) {}
  struct Entry {
    int32_t id;
    float score;
    bool record_split;  // remember how this piece was formed (SentencePiece UNUSED pieces)
  };
  /// Adds a piece; when a piece string repeats, the first id stays.
  void add(std::string_view piece, Entry e);
  const Entry* find(std::string_view piece) const;
  size_t max_piece_bytes() const { return max_bytes_; }
  const std::string& space() const { return space_; }
  /// True while no piece holds a space after a non-space byte, so words merge independently.
  bool words_independent() const { return words_independent_; }

 private:
  StringMap<Entry> map_;
  size_t max_bytes_ = 0;
  std::string space_;
  bool words_independent_ = true;
};

/// A symbol: the bytes [begin, begin + size) of the working text and its id (-1: not known).
/// Frozen symbols (SentencePiece user-defined pieces) never take part in a merge.
struct BpeSymbol {
  uint32_t begin = 0, size = 0;
  int32_t id = -1;
  bool frozen = false;
};

/// For pieces added with record_split: piece -> (left part, right part) of its last candidate.
using SplitLog = StringMap<std::pair<std::string, std::string>>;

/// Merges `symbols` (back-to-back pieces of `text`, in order, text at most 4 GiB) and returns
/// the merged sequence; merged symbols carry the id of their vocabulary entry. With `splits`
/// the whole text is one queue: which candidate recorded a split last depends on global order.
std::vector<BpeSymbol> bpe_merge(std::string_view text, std::vector<BpeSymbol> symbols,
                                 const MergeVocab& vocab, SplitLog* splits = nullptr);

/// Length of the UTF-8 sequence that lead byte `c` announces (SentencePiece's table: 1 for a
/// stray continuation byte).
inline size_t utf8_lead_length(unsigned char c) {
  return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/// Length of the valid UTF-8 character at the start of `s` (no overlongs, no surrogates, at
/// most U+10FFFF), or 0 if it is malformed or truncated. `s` must not be empty.
size_t valid_utf8_char(std::string_view s);

/// Parses "<0xHH>" (two upper- or lower-case hex digits); -1 if `piece` is not of that form.
int parse_byte_piece(std::string_view piece);

}  // namespace lrq::detail
