// SentencePiece BPE tokenizer read from a `.model` file (a serialized ModelProto) without
// libsentencepiece or libprotobuf, which the GPU machines lack: a minimal protobuf wire-format
// reader takes the fields that encoding and decoding need. Encoding and decoding reproduce
// SentencePiece's BPE model and processor, including their corner cases (dummy prefix even before
// a leading space, malformed UTF-8 read as U+FFFD, runs of unknowns merged into one <unk>,
// UNUSED pieces split back into the pieces that formed them).
//
// Not supported, refused at load with an Error naming the file: unigram/word/char models, and
// normalization rules other than identity (they need SentencePiece's precompiled double-array
// character map). The Llama family uses BPE with identity normalization.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/gguf_llama.h"
#include "tokenizer/bpe.h"
#include "tokenizer/formats.h"

namespace lrq {
namespace {

using detail::BpeSymbol;
using detail::MergeVocab;
using detail::SplitLog;
using detail::StringMap;

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";      // U+2581 LOWER ONE EIGHTH BLOCK
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
constexpr size_t kMaxPieceBytes = 8000;                        // SentencePiece's own limit

enum PieceType : uint8_t { kNormal = 1, kUnknown, kControl, kUserDefined, kUnused, kByte };
enum ModelType { kUnigram = 1, kBpe, kWord, kChar };

// ---------------------------------------------------------------- protobuf wire format

struct WireField {
  uint32_t number;
  uint32_t wire_type;      // 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
  uint64_t value;          // varint, fixed32 or fixed64 payload
  std::string_view bytes;  // length-delimited payload
  size_t offset;           // of the tag in the file, for error messages
};

// Reads the fields of one message. `base` is the message's offset in the file.
class WireReader {
 public:
  WireReader(std::string_view data, size_t base, const std::string& path)
      : data_(data), base_(base), path_(path) {}
  bool more() const { return pos_ < data_.size(); }

  WireField next() {
    WireField f{};
    f.offset = base_ + pos_;
    const uint64_t tag = varint();
    f.number = uint32_t(tag >> 3);
    f.wire_type = uint32_t(tag & 7);
    if (tag >> 3 == 0 || tag >> 3 > (1u << 29)) bad(f.offset, "invalid field number");
    switch (f.wire_type) {
      case 0:
        f.value = varint();
        break;
      case 1:
        f.value = fixed(8);
        break;
      case 5:
        f.value = fixed(4);
        break;
      case 2: {
        const uint64_t len = varint();
        if (len > data_.size() - pos_)
          bad(f.offset, fmt::format("field {} of {} bytes runs past the end", f.number, len));
        f.bytes = data_.substr(pos_, size_t(len));
        pos_ += size_t(len);
        break;
      }
      default:
        bad(f.offset, fmt::format("unsupported wire type {}", f.wire_type));
    }
    return f;
  }

  [[noreturn]] void bad(size_t offset, const std::string& what) const {
    fail(path_, "SentencePiece model: malformed protobuf at byte {}: {}", offset, what);
  }

 private:
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) bad(base_ + pos_, "truncated varint");
      const uint8_t b = uint8_t(data_[pos_++]);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    bad(base_ + pos_, "varint longer than 10 bytes");
  }
  uint64_t fixed(size_t n) {
    if (data_.size() - pos_ < n) bad(base_ + pos_, "truncated fixed-size field");
    uint64_t v = 0;
    std::memcpy(&v, data_.data() + pos_, n);  // little-endian host, as the file
    pos_ += n;
    return v;
  }

  std::string_view data_;
  size_t base_, pos_ = 0;
  const std::string& path_;
};

// Offset of a length-delimited payload within `data` (payloads are views into it).
size_t offset_in(std::string_view data, std::string_view payload) {
  return size_t(payload.data() - data.data());
}

// ---------------------------------------------------------------- the model's fields

struct SpPiece {
  std::string piece;
  float score = 0;
  uint8_t type = kNormal;
};

// Proto2 defaults apply to absent fields.
struct SpModel {
  std::vector<SpPiece> pieces;
  int model_type = kUnigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string unk_surface = " \xE2\x81\x87 ";
  std::string bos_piece = "<s>", eos_piece = "</s>";
  std::string normalizer_name;
  bool has_charsmap = false, has_denormalizer_charsmap = false;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

class SpParser {
 public:
  SpParser(std::string_view data, const std::string& path) : data_(data), path_(path) {}

  SpModel parse() {
    SpModel m;
    WireReader r(data_, 0, path_);
    while (r.more()) {
      const WireField f = r.next();
      switch (f.number) {
        case 1:
          m.pieces.push_back(piece(f, m.pieces.size()));
          break;
        case 2:
          trainer_spec(f, m);
          break;
        case 3:
          normalizer_spec(f, m, false);
          break;
        case 5:
          normalizer_spec(f, m, true);
          break;
        default:
          break;  // self-test data and fields of later versions
      }
    }
    return m;
  }

 private:
  std::string_view message(const WireField& f, const char* name) {
    expect(f, 2, name);
    return f.bytes;
  }
  void expect(const WireField& f, uint32_t wire_type, const char* name) {
    if (f.wire_type != wire_type)
      fail(path_, "SentencePiece model: field {} ({}) at byte {} has wire type {}, expected {}",
           f.number, name, f.offset, f.wire_type, wire_type);
  }
  bool flag(const WireField& f, const char* name) {
    expect(f, 0, name);
    return f.value != 0;
  }
  // Proto int32: negative values are sign-extended to 64 bits on the wire.
  int32_t int32(const WireField& f, const char* name) {
    expect(f, 0, name);
    return int32_t(uint32_t(f.value));
  }

  SpPiece piece(const WireField& outer, size_t index) {
    const std::string_view body = message(outer, "pieces");
    WireReader r(body, offset_in(data_, body), path_);
    SpPiece p;
    while (r.more()) {
      const WireField f = r.next();
      if (f.number == 1) {
        p.piece = std::string(message(f, "piece"));
      } else if (f.number == 2) {
        expect(f, 5, "score");
        const uint32_t bits = uint32_t(f.value);
        std::memcpy(&p.score, &bits, 4);
        if (std::isnan(p.score))
          fail(path_, "SentencePiece model: piece {} has a NaN score", index);
      } else if (f.number == 3) {
        const int32_t t = int32(f, "type");
        if (t < kNormal || t > kByte)
          fail(path_, "SentencePiece model: piece {} has unknown type {}", index, t);
        p.type = uint8_t(t);
      }
    }
    return p;
  }

  void trainer_spec(const WireField& outer, SpModel& m) {
    const std::string_view body = message(outer, "trainer_spec");
    WireReader r(body, offset_in(data_, body), path_);
    while (r.more()) {
      const WireField f = r.next();
      switch (f.number) {
        case 3:
          m.model_type = int32(f, "model_type");
          break;
        case 24:
          m.treat_whitespace_as_suffix = flag(f, "treat_whitespace_as_suffix");
          break;
        case 35:
          m.byte_fallback = flag(f, "byte_fallback");
          break;
        case 44:
          m.unk_surface = std::string(message(f, "unk_surface"));
          break;
        case 46:
          m.bos_piece = std::string(message(f, "bos_piece"));
          break;
        case 47:
          m.eos_piece = std::string(message(f, "eos_piece"));
          break;
        // split_digits (25) and the unk/bos/eos/pad ids (40-43) shape training only: the
        // encoder finds the pieces by type and name, as SentencePiece's processor does.
        default:
          break;
      }
    }
  }

  void normalizer_spec(const WireField& outer, SpModel& m, bool denormalizer) {
    const std::string_view body = message(outer, "normalizer_spec");
    WireReader r(body, offset_in(data_, body), path_);
    while (r.more()) {
      const WireField f = r.next();
      if (denormalizer) {
        if (f.number == 2)
          m.has_denormalizer_charsmap = !message(f, "precompiled_charsmap").empty();
        continue;
      }
      switch (f.number) {
        case 1:
          m.normalizer_name = std::string(message(f, "name"));
          break;
        case 2:
          m.has_charsmap = !message(f, "precompiled_charsmap").empty();
          break;
        case 3:
          m.add_dummy_prefix = flag(f, "add_dummy_prefix");
          break;
        case 4:
          m.remove_extra_whitespaces = flag(f, "remove_extra_whitespaces");
          break;
        case 5:
          m.escape_whitespaces = flag(f, "escape_whitespaces");
          break;
        default:
          break;
      }
    }
  }

  std::string_view data_;
  const std::string& path_;
};

// ---------------------------------------------------------------- the tokenizer

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(SpModel m, std::string path);

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return int32_t(pieces_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  std::string piece(int32_t id) const override;

 private:
  std::string normalize(std::string_view text) const;
  size_t user_defined_prefix(std::string_view s) const;
  int32_t find(std::string_view piece) const;
  void emit(std::string_view piece, int32_t id, const SplitLog& splits, bool& prev_unk,
            std::vector<int32_t>& out) const;

  std::string path_;
  std::vector<std::string> pieces_;
  std::vector<uint8_t> types_;
  std::vector<int16_t> byte_of_id_;  // byte value of a BYTE piece, -1 for the others
  int32_t byte_ids_[256];
  StringMap<int32_t> ids_;
  MergeVocab merges_;
  std::vector<size_t> user_defined_lengths_;  // distinct, longest first
  bool has_unused_ = false;
  int32_t unk_id_ = -1, bos_id_ = -1, eos_id_ = -1;
  bool byte_fallback_, add_dummy_prefix_, remove_extra_whitespaces_, escape_whitespaces_;
  std::string unk_surface_;
};

SentencePieceTokenizer::SentencePieceTokenizer(SpModel m, std::string path)
    : path_(std::move(path)),
      merges_(m.escape_whitespaces ? kSpaceSymbol : " "),
      byte_fallback_(m.byte_fallback),
      add_dummy_prefix_(m.add_dummy_prefix),
      remove_extra_whitespaces_(m.remove_extra_whitespaces),
      escape_whitespaces_(m.escape_whitespaces),
      unk_surface_(std::move(m.unk_surface)) {
  static constexpr const char* kModelNames[] = {"", "unigram", "BPE", "word", "char"};
  if (m.model_type != kBpe)
    fail(path_, "SentencePiece model: {} models are not supported (only BPE)",
         m.model_type >= kUnigram && m.model_type <= kChar ? kModelNames[m.model_type]
                                                           : "unknown-type");
  if (m.has_charsmap || m.has_denormalizer_charsmap)
    fail(path_, "SentencePiece model: normalization rule {:?} is not supported (only identity)",
         m.normalizer_name);
  if (m.treat_whitespace_as_suffix)
    fail(path_, "SentencePiece model: treat_whitespace_as_suffix is not supported");
  if (m.pieces.empty()) fail(path_, "SentencePiece model: no pieces");
  if (m.pieces.size() > size_t(std::numeric_limits<int32_t>::max()))
    fail(path_, "SentencePiece model: too many pieces ({})", m.pieces.size());

  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  byte_of_id_.assign(m.pieces.size(), -1);
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    const SpPiece& p = m.pieces[i];
    const int32_t id = int32_t(i);
    if (p.piece.empty() || p.piece.size() >= kMaxPieceBytes ||
        p.piece.find('\0') != std::string::npos)
      fail(path_, "SentencePiece model: piece {} is empty, too long or holds a NUL", i);
    if (!ids_.emplace(p.piece, id).second)
      fail(path_, "SentencePiece model: piece {:?} is defined twice", p.piece);
    switch (p.type) {
      case kNormal:
      case kUserDefined:
      case kUnused:
        merges_.add(p.piece, {id, p.score, p.type == kUnused});
        has_unused_ |= p.type == kUnused;
        if (p.type == kUserDefined) user_defined_lengths_.push_back(p.piece.size());
        break;
      case kUnknown:
        if (unk_id_ >= 0) fail(path_, "SentencePiece model: more than one unknown piece");
        unk_id_ = id;
        break;
      case kByte: {
        const int b = detail::parse_byte_piece(p.piece);
        if (!byte_fallback_ || b < 0)
          fail(path_, "SentencePiece model: byte piece {:?} is invalid or byte_fallback is off",
               p.piece);
        byte_of_id_[i] = int16_t(b);
        byte_ids_[b] = id;
        break;
      }
      default:
        break;
    }
    pieces_.push_back(p.piece);
    types_.push_back(p.type);
  }
  if (unk_id_ < 0) fail(path_, "SentencePiece model: no unknown piece");
  if (byte_fallback_)
    for (int b = 0; b < 256; ++b)
      if (byte_ids_[b] < 0)
        fail(path_, "SentencePiece model: byte_fallback is on but piece <0x{:02X}> is missing", b);
  auto control = [&](const std::string& name) {
    const int32_t id = find(name);
    return id >= 0 && types_[id] == kControl ? id : -1;
  };
  bos_id_ = control(m.bos_piece);
  eos_id_ = control(m.eos_piece);
  std::sort(user_defined_lengths_.begin(), user_defined_lengths_.end(), std::greater<>());
  user_defined_lengths_.erase(
      std::unique(user_defined_lengths_.begin(), user_defined_lengths_.end()),
      user_defined_lengths_.end());
}

int32_t SentencePieceTokenizer::find(std::string_view piece) const {
  auto it = ids_.find(piece);
  return it == ids_.end() ? -1 : it->second;
}

size_t SentencePieceTokenizer::user_defined_prefix(std::string_view s) const {
  for (size_t len : user_defined_lengths_) {
    if (len > s.size()) continue;
    const int32_t id = find(s.substr(0, len));
    if (id >= 0 && types_[id] == kUserDefined) return len;
  }
  return 0;
}

std::string SentencePieceTokenizer::normalize(std::string_view in) const {
  std::string out;
  // One identity-normalized character: user-defined pieces whole, malformed UTF-8 as U+FFFD.
  auto next_char = [&](std::string_view s) -> std::pair<std::string_view, size_t> {
    if (size_t len = user_defined_prefix(s)) return {s.substr(0, len), len};
    if (size_t len = detail::valid_utf8_char(s)) return {s.substr(0, len), len};
    return {kReplacementChar, 1};
  };
  if (remove_extra_whitespaces_)
    while (!in.empty() && next_char(in).first == " ") in.remove_prefix(1);
  if (in.empty()) return out;

  const std::string_view space = escape_whitespaces_ ? kSpaceSymbol : " ";
  out.reserve(in.size() + in.size() / 2 + space.size());
  if (add_dummy_prefix_) out += space;
  bool prev_space = remove_extra_whitespaces_;
  while (!in.empty()) {
    auto [ch, consumed] = next_char(in);
    while (prev_space && !ch.empty() && ch[0] == ' ') ch.remove_prefix(1);
    if (!ch.empty()) {
      for (char c : ch) {
        if (c == ' ')
          out += space;
        else
          out += c;
      }
      prev_space = remove_extra_whitespaces_ && ch.back() == ' ';
    }
    in.remove_prefix(consumed);
  }
  if (remove_extra_whitespaces_)
    while (out.size() >= space.size() && std::string_view(out).ends_with(space))
      out.erase(out.size() - space.size());
  return out;
}

void SentencePieceTokenizer::emit(std::string_view piece, int32_t id, const SplitLog& splits,
                                  bool& prev_unk, std::vector<int32_t>& out) const {
  if (id >= 0 && types_[id] == kUnused) {
    // SentencePiece never outputs an UNUSED piece: it splits it back into the pieces that
    // formed it, recursively.
    auto it = splits.find(piece);
    if (it != splits.end()) {
      emit(it->second.first, find(it->second.first), splits, prev_unk, out);
      emit(it->second.second, find(it->second.second), splits, prev_unk, out);
      return;
    }
  }
  const bool unk = id < 0 || types_[id] == kUnknown;
  if (unk && byte_fallback_) {
    for (char c : piece) out.push_back(byte_ids_[uint8_t(c)]);
  } else if (!(unk && prev_unk)) {  // a run of unknown pieces becomes one <unk>
    out.push_back(unk ? unk_id_ : id);
  }
  prev_unk = unk;
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && bos_id_ >= 0) out.push_back(bos_id_);
  const std::string norm = normalize(text);
  if (norm.size() > std::numeric_limits<uint32_t>::max())
    fail(path_, "cannot encode a text of {} bytes (at most 4 GiB)", text.size());

  // Normalized text is valid UTF-8, so a lead byte gives the character's length.
  std::vector<BpeSymbol> symbols;
  symbols.reserve(norm.size());
  const std::string_view sv(norm);
  for (size_t pos = 0; pos < norm.size();) {
    const size_t user = user_defined_prefix(sv.substr(pos));
    const size_t len =
        user ? user : std::min(norm.size() - pos, detail::utf8_lead_length(norm[pos]));
    symbols.push_back({uint32_t(pos), uint32_t(len), find(sv.substr(pos, len)), user > 0});
    pos += len;
  }
  SplitLog splits;
  symbols = detail::bpe_merge(sv, std::move(symbols), merges_, has_unused_ ? &splits : nullptr);

  out.reserve(out.size() + symbols.size());
  bool prev_unk = false;
  for (const BpeSymbol& s : symbols) emit(sv.substr(s.begin, s.size), s.id, splits, prev_unk, out);
  return out;
}

std::string SentencePieceTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text, bytes;
  // Byte pieces collect into `bytes`; each malformed byte there decodes to U+FFFD.
  auto flush_bytes = [&] {
    for (size_t i = 0; i < bytes.size();) {
      const size_t len = detail::valid_utf8_char(std::string_view(bytes).substr(i));
      if (len) {
        text.append(bytes, i, len);
        i += len;
      } else {
        text += kReplacementChar;
        ++i;
      }
    }
    bytes.clear();
  };
  // The dummy prefix: a '▁' that starts the text is dropped.
  bool at_start = true, prefix_dropped = false;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      fail(path_, "cannot decode id {}: outside the vocabulary [0, {})", id, vocab_size());
    if (byte_of_id_[id] >= 0) {
      bytes += char(byte_of_id_[id]);
      continue;
    }
    flush_bytes();
    if (prefix_dropped || !text.empty()) at_start = false;
    prefix_dropped = false;
    if (types_[id] == kControl) continue;
    if (types_[id] == kUnknown) {
      text += unk_surface_;
      continue;
    }
    std::string_view p = pieces_[id];
    if (at_start && (add_dummy_prefix_ || remove_extra_whitespaces_) &&
        p.starts_with(kSpaceSymbol)) {
      p.remove_prefix(kSpaceSymbol.size());
      // Without extra whitespace removal only one '▁' is the prefix; with it, all are dropped.
      prefix_dropped = !remove_extra_whitespaces_;
    }
    for (size_t at; (at = p.find(kSpaceSymbol)) != std::string_view::npos;) {
      text.append(p.substr(0, at));
      text += ' ';
      p.remove_prefix(at + kSpaceSymbol.size());
    }
    text.append(p);
  }
  flush_bytes();
  return text;
}

std::string SentencePieceTokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    fail(path_, "id {} is outside the vocabulary [0, {})", id, vocab_size());
  return pieces_[id];
}

}  // namespace

std::unique_ptr<Tokenizer> detail::parse_sentencepiece(std::string_view data,
                                                       const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(SpParser(data, path).parse(), path);
}

SpmVocab detail::parse_sentencepiece_vocab(std::string_view data, const std::string& path) {
  SpModel m = SpParser(data, path).parse();
  // GGUF's "llama" tokenizer always writes spaces as U+2581; a model that keeps them as spaces
  // would be read back as a different tokenizer.
  if (!m.escape_whitespaces)
    fail(path, "SentencePiece model: escape_whitespaces is off, which GGUF cannot express");
  // Built once to refuse what lrquant cannot encode with, and to find BOS/EOS as the encoder does.
  SentencePieceTokenizer tok(m, path);
  SpmVocab v;
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    v.tokens.push_back(m.pieces[i].piece);
    v.scores.push_back(m.pieces[i].score);
    v.types.push_back(m.pieces[i].type);
    if (m.pieces[i].type == kUnknown) v.unk = int32_t(i);
  }
  v.bos = tok.bos_id();
  v.eos = tok.eos_id();
  v.add_space_prefix = m.add_dummy_prefix;
  v.remove_extra_whitespaces = m.remove_extra_whitespaces;
  return v;
}

std::unique_ptr<Tokenizer> sentencepiece_from_vocab(const SpmVocab& v, const std::string& path) {
  const size_t n = v.tokens.size();
  if (v.scores.size() != n || v.types.size() != n)
    fail(path, "SentencePiece vocabulary: {} tokens but {} scores and {} types", n,
         v.scores.size(), v.types.size());
  SpModel m;
  m.model_type = kBpe;
  for (size_t i = 0; i < n; ++i) {
    if (v.types[i] < kNormal || v.types[i] > kByte)
      fail(path, "SentencePiece vocabulary: token {} has type {} (piece types are 1-6)", i,
           v.types[i]);
    m.pieces.push_back({v.tokens[i], v.scores[i], uint8_t(v.types[i])});
    m.byte_fallback |= v.types[i] == kByte;
  }
  // The encoder finds BOS and EOS by name among the control pieces, as SentencePiece does; a
  // name no piece has leaves them unset.
  auto name_of = [&](int32_t id) { return id >= 0 && size_t(id) < n ? v.tokens[size_t(id)] : ""; };
  m.bos_piece = name_of(v.bos);
  m.eos_piece = name_of(v.eos);
  m.add_dummy_prefix = v.add_space_prefix;
  m.remove_extra_whitespaces = v.remove_extra_whitespaces;
  m.escape_whitespaces = true;
  return std::make_unique<SentencePieceTokenizer>(std::move(m), path);
}

}  // namespace lrq
