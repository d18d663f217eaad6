// Errors: every failure a user can cause is an lrq::Error whose message is one line
// naming the file (or argument) and the problem. The CLI prints it and exits nonzero.
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

#if !defined(__CUDACC__)
// nvcc cannot evaluate fmt's compile-time format checks; CUDA sources use fail_msg instead.
#include <fmt/format.h>
#endif

namespace lrq {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throws Error("<where>: <msg>") (or just msg when where is empty).
[[noreturn]] void fail_msg(std::string_view where, const std::string& msg);

#if !defined(__CUDACC__)
/// Throws Error("<where>: <formatted message>").
template <class... Args>
[[noreturn]] void fail(std::string_view where, fmt::format_string<Args...> f, Args&&... args) {
  fail_msg(where, fmt::format(f, std::forward<Args>(args)...));
}
#endif

/// Internal invariant (a bug if it fires, not bad input).
#define LRQ_ASSERT(cond)                                                                     \
  do {                                                                                       \
    if (!(cond))                                                                             \
      ::lrq::fail_msg("internal error", std::string(#cond) + " (" + __FILE__ + ":" +         \
                                            std::to_string(__LINE__) + ")");                 \
  } while (0)

}  // namespace lrq
