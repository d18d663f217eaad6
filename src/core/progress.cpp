#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace lrq {

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(2)) {
  start_ = last_ = std::chrono::steady_clock::now();
}

void Progress::update(int64_t done, const std::string& status) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  // A terminal line is cheap to rewrite; a log file should not get thousands of lines.
  const double min_gap = tty_ ? 0.2 : 5.0;
  if (done < total_ && std::chrono::duration<double>(now - last_).count() < min_gap) return;
  last_ = now;
  double el = std::chrono::duration<double>(now - start_).count();
  double eta = done > 0 ? el * double(total_ - done) / double(done) : 0.0;
  std::fprintf(stderr, "%s[%s] %lld/%lld %s  %.0fs elapsed, eta %.0fs%s", tty_ ? "\r" : "",
               label_.c_str(), (long long)done, (long long)total_, status.c_str(), el, eta,
               tty_ ? "\033[K" : "\n");
  std::fflush(stderr);
}

void Progress::finish(const std::string& status) {
  if (!enabled_) return;
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "%s[%s] done %s  %.1fs%s\n", tty_ ? "\r" : "", label_.c_str(),
               status.c_str(), el, tty_ ? "\033[K" : "");
}

}  // namespace lrq
