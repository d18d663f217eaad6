// safetensors reading (memory-mapped, validated) and writing (atomic).
//
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data buffer; offsets are
// relative to the start of the data buffer.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace lrq {

class MappedFile;

struct TensorEntry {
  DType dtype;
  Shape shape;
  size_t begin = 0, end = 0;  // byte range inside the data buffer
};

class SafetensorsFile {
 public:
  /// Maps and validates the file: header length within the file, JSON well formed, known dtypes,
  /// byte ranges inside the data buffer, matching shape*dtype sizes, no overlapping ranges.
  /// Every problem is an Error naming the file (and the tensor, where there is one).
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  /// Zero-copy CPU view of a tensor (keeps the mapping alive). The format does not promise
  /// alignment: a tensor whose bytes are not aligned to its element size is copied into an
  /// aligned buffer instead (files written by write_safetensors never need that).
  /// Throws Error("<file>: missing tensor <name>") if absent.
  Tensor get(const std::string& name) const;

 private:
  std::string path_;
  std::shared_ptr<MappedFile> file_;
  size_t data_start_ = 0;
  std::map<std::string, TensorEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

/// All tensors of a model folder: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json` (every shard must exist; every indexed name must be in its
/// shard). Names are unique across shards.
class TensorStore {
 public:
  static TensorStore open_dir(const std::string& dir);
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  /// Throws Error("<dir>: missing tensor <name>") if absent.
  Tensor get(const std::string& name) const;
  const TensorEntry& entry(const std::string& name) const;
  /// File holding `name` (for error messages).
  const std::string& file_of(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }
  /// The file that lists the tensors: model.safetensors or model.safetensors.index.json.
  const std::string& source() const { return source_; }

 private:
  std::string dir_, source_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;
};

/// Writes tensors and string metadata (as "__metadata__") to `path` atomically. The header is
/// padded with spaces to a multiple of 8 bytes, so the data buffer starts 8-byte aligned; the
/// data is laid out without gaps (the official reader rejects gaps) with wider element types
/// first, keeping the given order within one element size, so every tensor is aligned to its
/// element size and can be mapped zero-copy. Tensors on another device are copied to the CPU.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace lrq
