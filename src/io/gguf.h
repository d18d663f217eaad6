// GGUF, llama.cpp's model file, read and written by our own code (no ggml): the ggml block types
// as data (a traits table with each block's size, decoder and encoder), a validating reader over a
// memory-mapped file, and a streaming writer.
//
// Layout (little-endian): "GGUF", u32 version (2 or 3), i64 tensor count, i64 key-value count;
// the key-value pairs (string key, u32 value type, value; arrays: u32 element type, u64 count,
// elements); the tensor infos (string name, u32 n_dims, i64 ne[n_dims] innermost first, u32 ggml
// type, u64 offset into the data section); padding to `general.alignment` (default 32); the data
// section. A string is a u64 length and that many bytes (no terminator).
//
// The llama-architecture conventions (tensor names, the RoPE row order, the metadata keys) are in
// io/gguf_llama.h; this file knows nothing about models.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace lrq {

class MappedFile;

namespace gguf {

// ------------------------------------------------------------------ ggml block types
/// ggml's tensor types, numbered as ggml.h numbers them (the number is what a file stores; 4, 5
/// and 31-33, 36-38 are retired numbers no file may use).
enum class Type : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41, Q2_0 = 42,
};

/// Decodes `n` values (a whole number of blocks) from `src` to F32.
using DecodeFn = void (*)(const void* src, float* dst, int64_t n);
/// Encodes `n` F32 values (a whole number of blocks) into blocks at `dst`.
using EncodeFn = void (*)(const float* src, void* dst, int64_t n);

struct TypeTraits {
  Type type;
  std::string_view name;  // ggml's spelling: "q4_0", "bf16", "q4_K"
  int64_t block;          // values per block
  size_t block_bytes;     // bytes per block
  DecodeFn decode;        // null: lrquant cannot read this type
  EncodeFn encode;        // null: lrquant does not write this type
};

/// The traits of the type a file stores as `id`, or null when ggml has no such type.
const TypeTraits* find_type(uint32_t id);
const TypeTraits& traits(Type t);
std::string_view type_name(Type t);
/// Parses a type name, case-insensitively ("Q4_0", "q4_k", "f32"); false if unknown.
bool type_from_name(std::string_view name, Type* out);
/// Bytes of `n` values of type t; `n` must be a whole number of blocks.
size_t row_bytes(Type t, int64_t n);
/// The types with a decoder, and with an encoder, as "f32, f16, ..." for messages.
std::string decodable_types();
std::string encodable_types();

// Block layouts, as ggml-common.h defines them; each one's cost in its comment, its size pinned.
// Values are little-endian, F16 fields as raw IEEE half bits.
inline constexpr int64_t kQK = 32;     // values per block of the 32-wide types
inline constexpr int64_t kQK_K = 256;  // values per super-block of the K-quants

/// 4.5 bpw: w = d (q - 8); qs[j] holds value j in its low nibble and value j + 16 in its high.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
/// 5.0 bpw: w = d q + m, nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[kQK / 2];
};
/// 5.5 bpw: w = d (q - 16); bit 4 of value j in bit j of qh, the low nibbles as Q4_0.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
/// 6.0 bpw: w = d q + m, bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
/// 8.5 bpw: w = d q, q int8.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
/// 2.625 bpw: 16 sub-blocks of 16, 4-bit scale and min each (scales[j] low and high nibble),
/// w = d sc q - dmin m.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d, dmin;
};
/// 3.4375 bpw: 16 sub-blocks of 16 with 6-bit signed scales, w = d (sc - 32) (q - 4), the high
/// code bit in hmask (set: no -4).
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
/// 4.5 bpw: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes, w = d sc q - dmin m.
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
/// 5.5 bpw: Q4_K's scales plus a fifth code bit in qh.
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
/// 6.5625 bpw: 16 sub-blocks of 16 with int8 scales, w = d sc (q - 32), q split in ql and qh.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// ------------------------------------------------------------------ K-quant super-blocks as numbers
/// What distinguishes the five K-quants, as the decoders above read them. Every sub-block's value
/// of code c (0 <= c < 2^code_bits) is A*(c - code_zero) - M with A = f16(d)*scale (as a float
/// product) and M = f16(dmin)*min (0 without mins): Q2_K, Q4_K and Q5_K are affine (unsigned
/// scales and mins), Q3_K and Q6_K symmetric with signed scales and codes centred on code_zero.
struct KQuantLayout {
  Type type;
  int sub;         ///< values per sub-block: 16 or 32
  int code_bits;   ///< 2..6
  int scale_min;   ///< the range of a sub-block scale as the decoder sees it
  int scale_max;
  int min_max;     ///< a sub-block min is 0..min_max; 0: no mins (symmetric)
  int code_zero;   ///< the code that means 0 (Q3_K 4, Q6_K 32, else 0)
  int subs() const { return int(kQK_K) / sub; }
  int maxq() const { return (1 << code_bits) - 1; }
};
/// Q2_K..Q6_K's layout; null for any other type.
const KQuantLayout* kquant_layout(Type t);

/// One super-block of a K-quant before packing: F16 super-scales, the sub-block scales and mins
/// (in the decoder's ranges) and the 256 codes (0..2^code_bits - 1, value order).
struct KQuantBlock {
  uint16_t d = 0, dmin = 0;
  int scale[16] = {}, min[16] = {};
  uint8_t code[kQK_K] = {};
};
/// Writes `b` as ggml's block bytes of type `l.type` (the inverse of its decoder).
void pack_kquant(const KQuantLayout& l, const KQuantBlock& b, void* dst);

// ------------------------------------------------------------------ metadata values
enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9,
  U64 = 10, I64 = 11, F64 = 12,
};
std::string_view value_type_name(ValueType t);

/// One metadata value: a scalar, a string, or an array of one element type (never of arrays).
/// Numeric payloads are kept as their little-endian bytes, as in the file.
class Value {
 public:
  Value() = default;
  static Value u32(uint32_t v);
  static Value i32(int32_t v);
  static Value u64(uint64_t v);
  static Value f32(float v);
  static Value boolean(bool v);
  static Value string(std::string v);
  static Value strings(std::vector<std::string> v);
  static Value f32s(const std::vector<float>& v);
  static Value i32s(const std::vector<int32_t>& v);
  /// A numeric or bool scalar (t) or array (Array of elem) from raw little-endian bytes.
  static Value raw(ValueType t, ValueType elem, uint64_t count, std::vector<uint8_t> bytes);

  ValueType type() const { return type_; }
  /// The element type of an array (type() == Array).
  ValueType elem() const { return elem_; }
  bool is_array() const { return type_ == ValueType::Array; }
  /// Elements of an array (1 for a scalar).
  uint64_t count() const { return count_; }

  /// An integer scalar (any width, signed or unsigned) as int64; nullopt for anything else or a
  /// u64 beyond int64.
  std::optional<int64_t> as_int() const;
  /// An integer or float scalar as double.
  std::optional<double> as_number() const;
  std::optional<bool> as_bool() const;
  const std::string* as_string() const { return type_ == ValueType::String ? &str_ : nullptr; }
  /// Element i of a numeric array as double / int64 (the caller checked elem() and count()).
  double number_at(uint64_t i) const;
  int64_t int_at(uint64_t i) const;
  /// Elements of a string array.
  const std::vector<std::string>& string_array() const { return strs_; }
  /// Bytes of a numeric scalar or array (for the writer).
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  /// "u32 7", "str \"llama\"", "arr[str, 4096]": for messages.
  std::string describe() const;

 private:
  ValueType type_ = ValueType::U8, elem_ = ValueType::U8;
  uint64_t count_ = 1;
  std::vector<uint8_t> bytes_;
  std::string str_;
  std::vector<std::string> strs_;
};

// ------------------------------------------------------------------ reading
struct TensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the innermost (contiguous) dimension
  Type type = Type::F32;
  uint64_t offset = 0;  // into the data section
  uint64_t bytes = 0;
  int64_t numel() const;
  /// Row-major shape (outermost first: ne reversed), as lrquant's tensors have it.
  Shape shape() const;
};

class File {
 public:
  /// Maps and validates the whole file: magic, version, counts bounded by the file size, every
  /// string and array inside the file, known value types (no arrays of arrays), unique keys and
  /// tensor names, general.alignment a power of two, every tensor's dimensions (at most 4, no
  /// overflow, rows a whole number of blocks), known ggml type, offset aligned and its bytes inside
  /// the data section, no two tensors' bytes overlapping. Every problem is an Error naming the
  /// file (and the key or tensor).
  static File open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  /// Key-value pairs in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* tensor(std::string_view name) const;
  /// The stored bytes of a tensor (a view into the mapping).
  const uint8_t* data(const TensorInfo& t) const;

  // Typed metadata; a present key of the wrong type is an Error naming the file and the key.
  std::optional<std::string> opt_string(std::string_view key) const;
  std::optional<int64_t> opt_int(std::string_view key) const;
  std::optional<double> opt_number(std::string_view key) const;
  std::optional<bool> opt_bool(std::string_view key) const;
  std::string req_string(std::string_view key) const;
  int64_t req_int(std::string_view key) const;

  /// The tensor as a row-major lrquant tensor: F32, F16 and BF16 as zero-copy views of the
  /// mapping, every decodable block type decoded to F32. A type lrquant cannot decode is an
  /// Error naming the tensor and the type.
  Tensor load(const TensorInfo& t) const;
  /// load() with the rows (the outermost dimension) of a 2-D tensor reordered: row r of the
  /// result is stored row src_row(r). Works on the stored bytes, so no value changes.
  Tensor load_rows(const TensorInfo& t, const std::function<int64_t(int64_t)>& src_row) const;

 private:
  std::string path_;
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32, data_start_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

/// True when the file at `path` starts with the GGUF magic (false for a missing or short file).
bool is_gguf_file(const std::string& path);

// ------------------------------------------------------------------ writing
class Writer {
 public:
  /// Sets a key (replacing an earlier value of the same key, keeping its place).
  void set(const std::string& key, Value v);
  /// Adds a tensor of `type` with ggml dimensions `ne` (innermost first); `fill(dst)` writes its
  /// row_bytes(type, ne[0]) * rows bytes when the file is written, one tensor at a time.
  void add_tensor(std::string name, std::vector<int64_t> ne, Type type,
                  std::function<void(uint8_t* dst)> fill);
  /// Writes version 3 atomically (a temporary file beside `path`, renamed when complete): every
  /// tensor padded to the alignment, the data section aligned. Names too long for ggml (64 bytes
  /// with the terminator), duplicates and rows that are not whole blocks are Errors naming `path`.
  void write(const std::string& path) const;
  /// Bytes the file will have.
  uint64_t file_bytes() const;

 private:
  struct Pending {
    std::string name;
    std::vector<int64_t> ne;
    Type type;
    uint64_t bytes;
    std::function<void(uint8_t*)> fill;
  };
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<Pending> tensors_;
  uint64_t alignment_ = 32;
};

}  // namespace gguf
}  // namespace lrq
