// Read-only memory-mapped file. Tensors loaded from checkpoints are views into a mapping that a
// shared_ptr keeps alive, so loading costs no copy and pages in on first use.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace lrq {

class MappedFile {
 public:
  /// Maps the whole file. Throws Error("<path>: ...") if it cannot be opened or mapped.
  /// An empty file is mapped as size() == 0 (data() == nullptr); callers decide if that is bad.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
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

/// Streaming form of write_file_atomic for outputs too large to build in memory (checkpoints):
/// write() appends to a temporary file beside `path`; commit() fsyncs it and renames it over
/// `path`. Destroyed without commit() (an exception on the way), the temporary file is removed,
/// so `path` is either the old file or the complete new one.
class AtomicFileWriter {
 public:
  /// Creates the temporary file; Error naming `path` if its folder is missing or not writable.
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  /// Appends `bytes` bytes.
  void write(const void* data, size_t bytes);
  void write(std::string_view s) { write(s.data(), s.size()); }
  /// Bytes written so far.
  size_t size() const { return written_; }
  /// Makes the file visible at `path`: fsync, rename over `path`, fsync of the folder.
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  size_t written_ = 0;
};

}  // namespace lrq
