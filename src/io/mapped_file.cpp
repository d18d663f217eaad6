#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <filesystem>
#include <system_error>

#include "core/error.h"

namespace lrq {

namespace {

std::string errno_text(int err) {
  std::string s = std::error_code(err, std::generic_category()).message();
  if (!s.empty()) s[0] = char(std::tolower(static_cast<unsigned char>(s[0])));
  return s;
}

// O_NONBLOCK so that a FIFO given by mistake is refused below instead of blocking the open.
int open_regular(const std::string& path, struct stat* st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, "{}", errno_text(errno));
  if (::fstat(fd, st) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, "cannot stat: {}", errno_text(err));
  }
  if (!S_ISREG(st->st_mode)) {
    ::close(fd);
    fail(path, "{}", S_ISDIR(st->st_mode) ? "is a directory, expected a file"
                                          : "is not a regular file");
  }
  return fd;
}

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  struct stat st;
  int fd = open_regular(path, &st);
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) fail(path, "cannot memory-map {} bytes: {}", f->size_, errno_text(err));
    f->data_ = static_cast<const char*>(p);
  } else {
    ::close(fd);  // mmap refuses length 0; an empty mapping needs no memory
  }
  return f;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<char*>(data_), size_);
}

std::string read_text_file(const std::string& path) {
  struct stat st;
  int fd = open_regular(path, &st);
  std::string out;
  out.reserve(size_t(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      fail(path, "read failed: {}", errno_text(err));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  // pid + counter make the name unique between processes and between writers of one process;
  // O_EXCL guards against a stale file of that name. 0666 lets the umask decide the mode.
  static std::atomic<unsigned> counter{0};
  for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
    tmp_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && errno != EEXIST) break;
  }
  if (fd_ < 0) {
    int err = errno;
    tmp_.clear();
    fail(path_, "cannot create a temporary file beside it: {}", errno_text(err));
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t bytes) {
  LRQ_ASSERT(fd_ >= 0);
  auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path_, "write failed after {} bytes: {}", written_, errno_text(errno));
    p += n;
    bytes -= size_t(n);
    written_ += size_t(n);
  }
}

void AtomicFileWriter::commit() {
  LRQ_ASSERT(fd_ >= 0);
  // fsync before rename: otherwise a crash can leave the new name pointing at an empty file.
  if (::fsync(fd_) != 0) fail(path_, "fsync failed: {}", errno_text(errno));
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail(path_, "close failed: {}", errno_text(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    fail(path_, "cannot rename the temporary file into place: {}", errno_text(errno));
  tmp_.clear();
  // Persist the rename itself; failure here leaves a correct file, so it is not an error.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  AtomicFileWriter w(path);
  w.write(contents);
  w.commit();
}

}  // namespace lrq
