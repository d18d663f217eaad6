#include "core/error.h"

namespace lrq {

void fail_msg(std::string_view where, const std::string& msg) {
  if (where.empty()) throw Error(msg);
  throw Error(std::string(where) + ": " + msg);
}

}  // namespace lrq
