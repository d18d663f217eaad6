// Tokenizers against independent references: the lab models' reference.json (ids and texts
// computed by libsentencepiece 0.2.2 and transformers), the WikiText-2 token-stream digest
// published there, ids worked out by hand on small synthetic models, and ids from a naive
// O(n^2) Python transcription of llama2.c's encoder (noted where used).
#include <sys/stat.h>

#include "tokenizer/tokenizer.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/sha256.h"
#include "test_util.h"

using namespace lrq;
using Ids = std::vector<int32_t>;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write(const std::string& path, std::string_view bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

nlohmann::json lab_reference() {
  return nlohmann::json::parse(slurp(test::shared("models/lab-m/reference.json")));
}

std::unique_ptr<Tokenizer> lab_tokenizer() {
  return load_tokenizer(test::shared("models/lab-m/tokenizer.model"));
}

Ids ids_of(const nlohmann::json& j) { return j.get<Ids>(); }

// SHA-256 of the ids written as little-endian uint16, the form reference.json digests.
std::string u16_digest(const Ids& ids) {
  std::string bytes;
  for (int32_t id : ids) {
    EXPECT_TRUE(id >= 0 && id < 65536);
    bytes += char(id & 0xFF);
    bytes += char(id >> 8);
  }
  return sha256_hex(bytes);
}

// Runs `f`, expects an lrq::Error of one line that names `path` and contains `what`.
template <class F>
void expect_error(F&& f, const std::string& path, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// ---- a minimal protobuf writer for synthetic SentencePiece models

std::string varint(uint64_t v) {
  std::string s;
  do {
    s += char((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return s;
}
std::string pb_varint(int field, uint64_t v) { return varint(uint64_t(field) << 3) + varint(v); }
std::string pb_bytes(int field, std::string_view b) {
  return varint(uint64_t(field) << 3 | 2) + varint(b.size()) + std::string(b);
}
std::string pb_float(int field, float f) {
  std::string s = varint(uint64_t(field) << 3 | 5);
  char b[4];
  std::memcpy(b, &f, 4);
  return s + std::string(b, 4);
}

enum { NORMAL = 1, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE };

struct SynthPiece {
  std::string piece;
  float score;
  int type;
};

std::string sp_model(const std::vector<SynthPiece>& pieces, const std::string& trainer,
                     const std::string& normalizer) {
  std::string m;
  for (const auto& p : pieces)
    m += pb_bytes(1, pb_bytes(1, p.piece) + pb_float(2, p.score) +
                         (p.type == NORMAL ? "" : pb_varint(3, uint64_t(p.type))));
  return m + pb_bytes(2, trainer) + pb_bytes(3, normalizer);
}

const std::vector<SynthPiece> kSynthPieces = {
    {"<unk>", 0, UNKNOWN},    {"<s>", 0, CONTROL}, {"</s>", 0, CONTROL},    {"\u2581", -5, NORMAL},
    {"a", -6, NORMAL},        {"b", -7, NORMAL},   {"\u2581a", -1, NORMAL}, {"ab", -0.5f, NORMAL},
    {"<X>", 0, USER_DEFINED}, {"ba", 0, UNUSED},   {"c", -8, NORMAL},       {"cc", -2, NORMAL},
};
const std::string kBpeTrainer = pb_varint(3, 2);  // model_type BPE; all else default

// Synthetic BPE model with SentencePiece's default normalizer settings (dummy prefix, extra
// whitespace removed), no byte fallback.
std::string synth_model_path() {
  const std::string path = test::temp_dir() + "/synth.model";
  write(path, sp_model(kSynthPieces, kBpeTrainer, pb_bytes(1, "identity")));
  return path;
}

// Synthetic llama2.c tokenizer: <unk> <s> </s>, 256 byte tokens, then " ", "a", "b", " a", "ab".
std::string llama2c_file(int32_t max_token_length) {
  std::string f(reinterpret_cast<const char*>(&max_token_length), 4);
  auto tok = [&](std::string_view s, float score) {
    int32_t n = int32_t(s.size());
    f.append(reinterpret_cast<const char*>(&score), 4);
    f.append(reinterpret_cast<const char*>(&n), 4);
    f.append(s);
  };
  tok("<unk>", 0);
  tok("\n<s>\n", 0);
  tok("\n</s>\n", 0);
  for (int b = 0; b < 256; ++b) tok(fmt::format("<0x{:02X}>", b), 0);
  tok(" ", -3);  // 259
  tok("a", -4);  // 260
  tok("b", -5);  // 261
  tok(" a", 1);  // 262
  tok("ab", 2);  // 263
  return f;
}

}  // namespace

// ------------------------------------------------------------------ lab models (SentencePiece)

TEST(SentencePiece, LabPromptsAndGenerationsMatchReference) {
  REQUIRE_SHARED();
  auto tok = lab_tokenizer();
  EXPECT_EQ(tok->vocab_size(), 4096);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const auto ref = lab_reference();
  const auto& items = ref["c_generations"]["items"];
  ASSERT_EQ(items.size(), 3u);
  for (const auto& item : items) {
    const std::string prompt = item["prompt"];
    const Ids ids = tok->encode(prompt, true);
    // prompt_ids come from transformers, prompt_ids_sentencepiece from libsentencepiece; they
    // differ only for texts that start with a space, which no prompt does.
    EXPECT_EQ(ids, ids_of(item["prompt_ids_sentencepiece"])) << prompt;
    EXPECT_EQ(ids, ids_of(item["prompt_ids"])) << prompt;
    // generated_text is the continuation decoded on its own (its leading '▁' is the dummy
    // prefix to SentencePiece); full_text is prompt and continuation decoded together.
    Ids gen = ids_of(item["generated_ids"]);
    EXPECT_EQ(tok->decode(gen), item["generated_text"].get<std::string>()) << prompt;
    Ids all = ids;
    all.insert(all.end(), gen.begin(), gen.end());
    EXPECT_EQ(tok->decode(all), item["full_text"].get<std::string>()) << prompt;
  }
}

TEST(SentencePiece, LeadingSpacesKeepTheDummyPrefix) {
  REQUIRE_SHARED();
  auto tok = lab_tokenizer();
  const auto ref = lab_reference();
  // reference.json lists the first 40 ids of libsentencepiece's encoding of each string; for
  // these texts transformers 5.17 drops the dummy prefix and sentencepiece keeps it.
  const auto& diffs = ref["tokenizer_check"]["differences"];
  ASSERT_EQ(diffs.size(), 2u);
  for (const auto& d : diffs) {
    const std::string text = d["text"];
    const Ids spm = ids_of(d["spm"]);
    Ids ids = tok->encode(text, true);
    ASSERT_GE(ids.size(), spm.size()) << text;
    ids.resize(spm.size());
    EXPECT_EQ(ids, spm) << text;
    EXPECT_EQ(tok->decode(tok->encode(text, true)), text);
  }
}

TEST(SentencePiece, WikiText2StreamMatchesPublishedDigest) {
  REQUIRE_SHARED();
  auto tok = lab_tokenizer();
  const auto wiki = lab_reference()["b_ppl_wiki"];
  // EVAL.md nonoverlap protocol: the whole file as one string, one BOS at the start.
  const std::string text = slurp(test::shared("data/wikitext-2/wiki.test.raw"));
  ASSERT_EQ(text.size(), 1290590u);
  const Ids ids = tok->encode(text, true);
  ASSERT_EQ(ids.size(), 462717u);
  ASSERT_EQ(ids.size(), wiki["tokens_total"].get<size_t>());
  const Ids first = ids_of(wiki["first_ids"]);
  EXPECT_EQ(Ids(ids.begin(), ids.begin() + ptrdiff_t(first.size())), first);
  const std::string digest = u16_digest(ids);
  EXPECT_EQ(digest.substr(0, 8), "85196b7d");
  EXPECT_EQ(digest, wiki["token_stream_sha256_u16le"].get<std::string>());
  EXPECT_EQ(tok->decode(ids), text);
}

TEST(SentencePiece, WholeTextMergeAgreesWithWordByWordMerge) {
  REQUIRE_SHARED();
  // A piece with '▁' after other characters lets merges cross word starts, so the encoder must
  // merge the whole text as one queue. Appended (as one more repeated `pieces` field) with
  // characters absent from the text, it cannot change the ids: the one-queue path must then
  // reproduce the published stream exactly.
  const std::string path = test::temp_dir() + "/crossing.model";
  write(path, slurp(test::shared("models/lab-m/tokenizer.model")) +
                  pb_bytes(1, pb_bytes(1, "\u01c2\u2581") + pb_float(2, -1e4f)));
  auto tok = load_tokenizer(path);
  ASSERT_EQ(tok->vocab_size(), 4097);
  const std::string text = slurp(test::shared("data/wikitext-2/wiki.test.raw"));
  ASSERT_EQ(text.find("\u01c2"), std::string::npos);
  const Ids ids = tok->encode(text, true);
  EXPECT_EQ(u16_digest(ids), lab_reference()["b_ppl_wiki"]["token_stream_sha256_u16le"].get<std::string>());
  // "▁ǂ▁ǂ": the new piece "ǂ▁" forms; the last ǂ falls back to its bytes C7 82.
  EXPECT_EQ(tok->encode("\u01c2 \u01c2", false), (Ids{3992, 4096, 3 + 0xC7, 3 + 0x82}));
}

TEST(SentencePiece, LabValidStreamMatchesReferenceCounts) {
  REQUIRE_SHARED();
  auto tok = lab_tokenizer();
  const auto ref = lab_reference();
  const std::string text = slurp(test::shared("data/lab-corpus/valid.txt"));
  const Ids ids = tok->encode(text, true);
  EXPECT_EQ(ids.size(), 189110u);
  EXPECT_EQ(ids.size(), ref["a_ppl_valid"]["tokens_total"].get<size_t>());
  // The logits probe's input is the first 64 tokens of this stream.
  const Ids probe = ids_of(ref["d_logits_probe"]["input_ids"]);
  EXPECT_EQ(Ids(ids.begin(), ids.begin() + ptrdiff_t(probe.size())), probe);
  EXPECT_EQ(tok->decode(ids), text);

  // One BOS per document: documents are separated by an empty line, without the final newline.
  size_t per_doc = 0;
  const std::string body = text.substr(0, text.find_last_not_of('\n') + 1);
  for (size_t start = 0;;) {
    const size_t end = body.find("\n\n", start);
    per_doc += tok->encode(std::string_view(body).substr(start, end - start), true).size();
    if (end == std::string::npos) break;
    start = end + 2;
  }
  EXPECT_EQ(per_doc, ref["a_ppl_valid_per_document_bos"]["tokens_total"].get<size_t>());
}

TEST(SentencePiece, RoundTripsAndByteFallback) {
  REQUIRE_SHARED();
  auto tok = lab_tokenizer();
  // Ids from a naive Python transcription of SentencePiece BPE (rescan all pairs per merge):
  // é, 日, 本 and 😀 are not pieces and fall back to their UTF-8 bytes (<0xXX> = 3 + byte),
  // digits stay single (split_digits), the newline is <0x0A> = 13.
  const std::string s = "H\u00e9llo \u65e5\u672c \U0001F600 12345\nnew  line";
  const Ids expect = {1,    504,  198,  172,  334, 3995, 3992, 233,  154,  168,
                      233,  159,  175,  3992, 243, 162,  155,  131,  3992, 4033,
                      4048, 4051, 4054, 4052, 13,  3997, 988,  3992, 1858};
  EXPECT_EQ(tok->encode(s, true), expect);
  for (const std::string& t :
       {s, std::string("a"), std::string("3.14159 and 2024-01-31"), std::string(" x"),
        std::string("trailing  "), std::string("\ttab\r\n"), std::string("caf\u00e9 na\u00efve"),
        std::string("\u00ab\u00bb \u2014 \u0416 \u4e2d\u6587 \U0001F680\U0001F600")}) {
    EXPECT_EQ(tok->decode(tok->encode(t, true)), t) << t;
    EXPECT_EQ(tok->decode(tok->encode(t, false)), t) << t;
  }
  EXPECT_EQ(tok->encode("", true), Ids{1});
  EXPECT_EQ(tok->encode("", false), Ids{});
  EXPECT_EQ(tok->decode(Ids{}), "");
  // Malformed UTF-8 reads as U+FFFD (SentencePiece's normalizer), so it comes back as U+FFFD.
  EXPECT_EQ(tok->decode(tok->encode("a\xff"
                                    "b",
                                    false)),
            "a\uFFFD"
            "b");
  // A byte token that is not valid UTF-8 on its own decodes to U+FFFD too.
  EXPECT_EQ(tok->decode(Ids{3 + 0xE6}), "\uFFFD");
  EXPECT_EQ(tok->piece(3992), "\u2581");
  EXPECT_EQ(tok->piece(13), "<0x0A>");
}

// ------------------------------------------------------------------ synthetic SentencePiece

TEST(SentencePiece, SyntheticModelFollowsSentencePieceRules) {
  const std::string path = synth_model_path();
  auto tok = load_sentencepiece(path);
  EXPECT_EQ(tok->vocab_size(), 12);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  // Extra whitespace removed: "▁a▁b"; "▁a" (-1) is the only pair in the vocabulary.
  EXPECT_EQ(tok->encode("  a  b  ", false), (Ids{6, 3, 5}));
  // "▁ab": "ab" (-0.5) beats "▁a" (-1).
  EXPECT_EQ(tok->encode("ab", true), (Ids{1, 3, 7}));
  // Unknown characters without byte fallback: one <unk> per run.
  EXPECT_EQ(tok->encode("axyzb", false), (Ids{6, 0, 5}));
  // The user-defined piece is matched whole and takes part in no merge.
  EXPECT_EQ(tok->encode("a<X>b", false), (Ids{6, 8, 5}));
  // "▁bab": the UNUSED piece "ba" (score 0) merges first, blocking "ab", and is then split
  // back into "b" "a".
  EXPECT_EQ(tok->encode("bab", false), (Ids{3, 5, 4, 5}));
  // "▁ccc": two equal-score "cc" pairs; the leftmost merges.
  EXPECT_EQ(tok->encode("ccc", false), (Ids{3, 11, 10}));
  EXPECT_EQ(tok->encode("   ", true), (Ids{1}));

  EXPECT_EQ(tok->decode(Ids{1, 6, 3, 5, 2}), "a b");
  EXPECT_EQ(tok->decode(Ids{0, 6}), " \u2047  a");  // <unk> shows as " ⁇ "
  // With extra whitespace removal every leading '▁' is dropped, not just the first.
  EXPECT_EQ(tok->decode(Ids{3, 3, 6}), "a");
  expect_error([&] { tok->decode(Ids{12}); }, path, "outside the vocabulary");
  expect_error([&] { tok->decode(Ids{-1}); }, path, "outside the vocabulary");
}

TEST(SentencePiece, UnsupportedModelsAreRefusedByName) {
  const std::string dir = test::temp_dir();
  const std::string identity = pb_bytes(1, "identity");
  const std::string unigram = dir + "/unigram.model";
  write(unigram, sp_model(kSynthPieces, pb_varint(3, 1), identity));
  expect_error([&] { load_tokenizer(unigram); }, unigram, "unigram models are not supported");
  const std::string defaults = dir + "/default_type.model";  // model_type absent: unigram
  write(defaults, sp_model(kSynthPieces, "", identity));
  expect_error([&] { load_tokenizer(defaults); }, defaults, "unigram models are not supported");
  const std::string nfkc = dir + "/nfkc.model";
  write(nfkc, sp_model(kSynthPieces, kBpeTrainer, pb_bytes(1, "nmt_nfkc") + pb_bytes(2, "xyz")));
  expect_error([&] { load_tokenizer(nfkc); }, nfkc, "\"nmt_nfkc\" is not supported");

  auto without = [&](int type) {
    std::vector<SynthPiece> p;
    for (const auto& x : kSynthPieces)
      if (x.type != type) p.push_back(x);
    return p;
  };
  const std::string no_unk = dir + "/no_unk.model";
  write(no_unk, sp_model(without(UNKNOWN), kBpeTrainer, identity));
  expect_error([&] { load_tokenizer(no_unk); }, no_unk, "no unknown piece");
  const std::string no_bytes = dir + "/no_bytes.model";  // byte_fallback without byte pieces
  write(no_bytes, sp_model(kSynthPieces, kBpeTrainer + pb_varint(35, 1), identity));
  expect_error([&] { load_tokenizer(no_bytes); }, no_bytes, "<0x00> is missing");
  auto dup = kSynthPieces;
  dup.push_back({"ab", -9, NORMAL});
  const std::string twice = dir + "/twice.model";
  write(twice, sp_model(dup, kBpeTrainer, identity));
  expect_error([&] { load_tokenizer(twice); }, twice, "\"ab\" is defined twice");
  const std::string bad_type = dir + "/bad_type.model";
  write(bad_type, pb_bytes(1, pb_bytes(1, "x") + pb_varint(3, 9)) + pb_bytes(2, kBpeTrainer));
  expect_error([&] { load_tokenizer(bad_type); }, bad_type, "unknown type 9");
}

// ------------------------------------------------------------------ llama2.c

TEST(Llama2c, Stories260KEncodesLikeLlama2c) {
  REQUIRE_SHARED();
  const std::string path = test::shared("models/stories260K/tok512.bin");
  auto tok = load_tokenizer(path);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->piece(1), "\n<s>\n");
  // The README gives no ids; these come from a naive Python transcription of run.c's encode()
  // (rescan every pair after each merge): " Once" " upon" " a" " time".
  const Ids once = tok->encode("Once upon a time", true);
  EXPECT_EQ(once, (Ids{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->piece(403), " Once");
  EXPECT_EQ(tok->decode(once), "Once upon a time");
  // Without BOS, run.c keeps the dummy-prefix space.
  EXPECT_EQ(tok->decode(tok->encode("Once upon a time", false)), " Once upon a time");
  // Same transcription: é, 日, 本, 😀 fall back to byte tokens (byte + 3), digits are single.
  const std::string s = "H\u00e9llo \u65e5\u672c \U0001F600 12345";
  EXPECT_EQ(tok->encode(s, true), (Ids{1,   320, 485, 306, 414, 410, 233, 154, 168, 233, 159, 175,
                                       410, 243, 162, 155, 131, 410, 475, 479, 472, 484, 480}));
  for (const std::string& t :
       {s,
        std::string("Once upon a time, there was a little girl named Lily. She loved to play "
                    "outside in the park.\nLily"),
        std::string("x"), std::string("  two  spaces\n\n")})
    EXPECT_EQ(tok->decode(tok->encode(t, true)), t) << t;
  EXPECT_EQ(tok->encode("", true), Ids{1});
  EXPECT_EQ(tok->decode(Ids{1, 2}), "");
  expect_error([&] { tok->decode(Ids{512}); }, path, "outside the vocabulary");
}

TEST(Llama2c, SyntheticTokenizerMergesAndDetection) {
  const std::string dir = test::temp_dir();
  // max_token_length 266 = 0x10A: the file starts like a protobuf (0x0A, non-zero length) and
  // must still be recognized as llama2.c after the protobuf parse fails.
  for (int32_t max_len : {6, 266}) {
    const std::string path = dir + fmt::format("/tok{}.bin", max_len);
    write(path, llama2c_file(max_len));
    auto tok = load_tokenizer(path);
    EXPECT_EQ(tok->vocab_size(), 264);
    EXPECT_EQ(tok->piece(263), "ab");
    // " ab": "ab" (2) beats " a" (1); " ab" is no token.
    EXPECT_EQ(tok->encode("ab", true), (Ids{1, 259, 263}));
    // " a b": " a" merges; "c" falls back to byte 0x63 -> token 0x63 + 3.
    EXPECT_EQ(tok->encode("a bc", false), (Ids{262, 259, 261, 0x63 + 3}));
    EXPECT_EQ(tok->decode(Ids{1, 262, 259, 261, 0x63 + 3}), "a bc");
    EXPECT_EQ(tok->decode(Ids{262, 259, 261}), " a b");
  }
}

// ------------------------------------------------------------------ bad files

TEST(TokenizerFiles, GarbageAndTruncatedFilesGiveCleanErrors) {
  const std::string dir = test::temp_dir();
  const std::string missing = dir + "/missing.model";
  expect_error([&] { load_tokenizer(missing); }, missing, "no such file or directory");
  expect_error([&] { load_tokenizer(dir); }, dir, "directory");
  // A FIFO where the tokenizer is expected: refused at once, never read (it would block).
  const std::string fifo = dir + "/fifo.model";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error([&] { load_tokenizer(fifo); }, fifo, "is not a regular file");
  const std::string empty = dir + "/empty.bin";
  write(empty, "");
  expect_error([&] { load_tokenizer(empty); }, empty,
               "not a SentencePiece model or llama2.c tokenizer");
  const std::string garbage = dir + "/garbage.bin";
  write(garbage, "this is not a tokenizer at all\n");
  expect_error([&] { load_tokenizer(garbage); }, garbage,
               "not a SentencePiece model or llama2.c tokenizer");

  const std::string l2c = llama2c_file(6);
  const std::string cut = dir + "/cut.bin";
  write(cut, l2c.substr(0, l2c.size() - 1));
  expect_error([&] { load_tokenizer(cut); }, cut, "llama2.c tokenizer: token 263");
  write(cut, l2c.substr(0, 100));
  expect_error([&] { load_tokenizer(cut); }, cut, "fewer than the 3 special and 256 byte");
  const std::string synth = synth_model_path();
  expect_error([&] { load_llama2c_tokenizer(synth); }, synth, "llama2.c tokenizer");

  const std::string model = sp_model(kSynthPieces, kBpeTrainer, pb_bytes(1, "identity"));
  const std::string cut_model = dir + "/cut.model";
  write(cut_model, model.substr(0, 20));
  expect_error([&] { load_tokenizer(cut_model); }, cut_model, "SentencePiece model: malformed");
  expect_error([&] { load_sentencepiece(cut); }, cut, "SentencePiece model");

  // Prefixes of both formats either load (a cut at a field boundary can leave a valid file) or
  // throw lrq::Error; nothing else escapes and nothing crashes. Every length near the ends and
  // inside the header, a sample of the rest (each is a file written and read).
  for (const std::string* whole : {&model, &l2c}) {
    for (size_t n = 0; n < whole->size(); ++n) {
      if (n > 64 && whole->size() - n > 64 && n % 7 != 0) continue;
      write(cut, whole->substr(0, n));
      try {
        load_tokenizer(cut)->encode("ab c", true);
      } catch (const Error&) {
      }
    }
  }
}

TEST(TokenizerFiles, CorruptedRealFilesNeverCrash) {
  REQUIRE_SHARED();
  const std::string dir = test::temp_dir();
  std::mt19937 rng(7);
  for (const char* rel : {"models/lab-m/tokenizer.model", "models/stories260K/tok512.bin"}) {
    const std::string original = slurp(test::shared(rel));
    const std::string path = dir + "/corrupt";
    int loaded = 0, refused = 0;
    for (int trial = 0; trial < 60; ++trial) {
      std::string bytes = original;
      for (int k = 0; k < 4; ++k)
        bytes[std::uniform_int_distribution<size_t>(0, bytes.size() - 1)(rng)] = char(rng());
      if (trial % 3 == 0) bytes.resize(std::uniform_int_distribution<size_t>(0, bytes.size())(rng));
      write(path, bytes);
      try {
        auto tok = load_tokenizer(path);
        const Ids ids = tok->encode("Once upon a time, caf\u00e9 \U0001F600", true);
        tok->decode(ids);
        ++loaded;
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
        ++refused;
      }
    }
    EXPECT_EQ(loaded + refused, 60);
    EXPECT_GT(refused, 0) << rel;  // truncations at least must be caught
  }
}
