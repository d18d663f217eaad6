#include "core/error.h"

#include <algorithm>

namespace lrq {

namespace {
// The one-line contract holds whatever a message quotes (a recipe, a file name, a JSON value):
// control characters are escaped here, once, instead of at every call that echoes input, and a
// quote of a huge input cannot make the line unbounded.
std::string one_line(std::string s) {
  constexpr size_t kMax = 4000;
  std::string out;
  out.reserve(std::min(s.size(), kMax) + 16);
  for (unsigned char c : s) {
    if (out.size() >= kMax) {
      out += "...";
      break;
    }
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  return out;
}
}  // namespace

void fail_msg(std::string_view where, const std::string& msg) {
  if (where.empty()) throw Error(one_line(msg));
  throw Error(one_line(std::string(where) + ": " + msg));
}

}  // namespace lrq
