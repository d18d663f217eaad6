#include "io/json_util.h"

#include "core/error.h"

namespace lrq::io {

std::string printable(std::string_view s, size_t max_len) {
  std::string out;
  for (char c : s.substr(0, max_len)) {
    auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  if (s.size() > max_len) out += "...";
  return out;
}

namespace {
void preview_into(const nlohmann::json& j, int depth, size_t max_len, std::string& out) {
  if (out.size() > max_len) return;
  if (!j.is_structured()) {
    out += j.dump();
    return;
  }
  if (depth >= 8) {
    out += "...";
    return;
  }
  const bool obj = j.is_object();
  out += obj ? '{' : '[';
  bool first = true;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (out.size() > max_len) break;
    if (!first) out += ',';
    first = false;
    if (obj) out += nlohmann::json(it.key()).dump() + ':';
    preview_into(*it, depth + 1, max_len, out);
  }
  out += obj ? '}' : ']';
}
}  // namespace

std::string preview(const nlohmann::json& j, size_t max_len) {
  std::string out;
  preview_into(j, 0, max_len, out);
  return printable(out, max_len);
}

nlohmann::json parse_json(const std::string& text, const std::string& file, std::string_view what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // Drop nlohmann's "[json.exception.parse_error.101] " tag; the rest says where and why.
    std::string_view msg = e.what();
    if (auto p = msg.find("] "); !msg.empty() && msg[0] == '[' && p != msg.npos)
      msg.remove_prefix(p + 2);
    fail(file, "{} is not valid JSON: {}", what, printable(msg, 300));
  }
}

int64_t json_int(const nlohmann::json& j, const std::string& key, const std::string& where,
                 int64_t lo, int64_t hi) {
  const auto it = j.is_object() ? j.find(key) : j.end();
  bool ok = it != j.end() && it->is_number_integer();
  int64_t v = 0;
  if (ok && it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    ok = u <= uint64_t(INT64_MAX);
    v = ok ? int64_t(u) : 0;
  } else if (ok) {
    v = it->get<int64_t>();
  }
  if (!ok || v < lo || v > hi)
    fail(where, "{} must be an integer in [{}, {}], got {}", key, lo, hi,
         it == j.end() ? std::string("nothing") : preview(*it));
  return v;
}

int64_t json_int_or(const nlohmann::json& j, const std::string& key, int64_t def,
                    const std::string& where, int64_t lo, int64_t hi) {
  return j.is_object() && j.contains(key) ? json_int(j, key, where, lo, hi) : def;
}

std::string_view json_type(const nlohmann::json& j) {
  if (j.is_number_integer()) return "integer";
  if (j.is_number()) return "number";
  return j.type_name();
}

}  // namespace lrq::io
