// Internal helpers shared by the io readers: turning untrusted JSON and names into one-line
// error messages.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace lrq::io {

/// `s` made safe for a one-line message: control bytes become '?', long strings are cut.
std::string printable(std::string_view s, size_t max_len = 120);

/// A JSON value of untrusted depth and size as a one-line preview of at most about `max_len`
/// characters. Nesting deeper than 8 levels prints as "..." (dump() recurses once per level,
/// so a value nested 50k arrays deep would overflow the stack in an error message).
std::string preview(const nlohmann::json& j, size_t max_len = 120);

/// Parses `text` (the contents of `file`); malformed JSON is Error("<file>: <what> is not
/// valid JSON: <parser message>").
nlohmann::json parse_json(const std::string& text, const std::string& file, std::string_view what);

/// j[key] as an integer in [lo, hi]; anything else (missing, a float, out of range) is
/// Error("<where>: <key> must be an integer in [lo, hi], got <value>"). nlohmann's get<int64_t>
/// converts a float such as 4e40 by a cast, which is undefined behaviour (found by fuzzing).
int64_t json_int(const nlohmann::json& j, const std::string& key, const std::string& where,
                 int64_t lo = INT64_MIN, int64_t hi = INT64_MAX);

/// json_int, or `def` when j has no `key`.
int64_t json_int_or(const nlohmann::json& j, const std::string& key, int64_t def,
                    const std::string& where, int64_t lo = INT64_MIN, int64_t hi = INT64_MAX);

/// "object", "array", "string", "integer", "number", "boolean", "null" (for type errors).
std::string_view json_type(const nlohmann::json& j);

}  // namespace lrq::io
