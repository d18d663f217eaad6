// Progress on stderr for long loops: rewrites one line on a terminal, prints a line every few
// seconds otherwise (CI logs), and stays silent when disabled.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace lrq {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled = true);
  /// Reports `done` of `total` with a short status ("ppl=28.1"); rate-limited.
  void update(int64_t done, const std::string& status = "");
  /// Final line (always printed when enabled).
  void finish(const std::string& status = "");

 private:
  std::string label_;
  int64_t total_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace lrq
