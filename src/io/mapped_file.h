// Read-only memory-mapped file. Tensors loaded from checkpoints are views into a mapping that a
// shared_ptr keeps alive, so loading costs no copy and pages in on first use.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

namespace lrq {

class MappedFile {
 public:
  /// Maps the whole file. Throws Error("<path>: ...") if it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  const char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const char* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

/// Reads a whole (small) file into a string. Throws Error naming the file on failure.
std::string read_text_file(const std::string& path);

/// Writes `contents` to `path` atomically: a temporary file in the same folder, then rename.
void write_file_atomic(const std::string& path, std::string_view contents);

}  // namespace lrq
