// LowRankSpec <-> "method:key=value,..." strings.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <charconv>
#include <set>
#include <vector>

#include "lowrank/lowrank.h"

namespace lrq {
namespace {

struct Option {
  const char* key;
  uint64_t LowRankSpec::*u64 = nullptr;  // exactly one of the two member pointers is set
  int LowRankSpec::*i32 = nullptr;
  int64_t min = 0, max = 0;
};

// Caps keep a typo from asking for hours of work or gigabytes of sketch.
const Option kP{"p", nullptr, &LowRankSpec::oversample, 0, 1 << 16};
const Option kQ{"q", nullptr, &LowRankSpec::iters, 0, 64};
const Option kIt{"it", nullptr, &LowRankSpec::iters, 0, 64};
const Option kB{"b", nullptr, &LowRankSpec::block, 1, 1 << 16};
const Option kSeed{"seed", &LowRankSpec::seed};

struct MethodInfo {
  LowRankMethod method;
  const char* name;
  std::vector<Option> options;  // in canonical order
};

const std::array<MethodInfo, 4>& methods() {
  static const std::array<MethodInfo, 4> table{{
      {LowRankMethod::Svd, "svd", {}},
      {LowRankMethod::Rsvd, "rsvd", {kP, kQ, kSeed}},
      {LowRankMethod::R1, "r1", {kIt, kSeed}},
      {LowRankMethod::Block, "block", {kB, kP, kIt, kSeed}},
  }};
  return table;
}

const MethodInfo& info(LowRankMethod m) {
  for (const auto& mi : methods())
    if (mi.method == m) return mi;
  fail("", "unknown low-rank method {}", int(m));
}

std::vector<std::string> option_keys(const MethodInfo& mi) {
  std::vector<std::string> keys;
  for (const auto& o : mi.options) keys.push_back(o.key);
  return keys;
}

}  // namespace

LowRankSpec LowRankSpec::parse(std::string_view text) {
  const std::string where = fmt::format("low-rank spec '{}'", text);
  const size_t colon = text.find(':');
  const std::string_view name = text.substr(0, colon);
  const MethodInfo* mi = nullptr;
  std::vector<std::string> names;
  for (const auto& m : methods()) {
    if (name == m.name) mi = &m;
    names.push_back(m.name);
  }
  if (!mi) fail(where, "unknown method '{}' (valid: {})", name, fmt::join(names, ", "));
  LowRankSpec spec;
  spec.method = mi->method;
  if (colon == std::string_view::npos) return spec;

  std::set<std::string_view> seen;
  std::string_view rest = text.substr(colon + 1);
  while (true) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == item.size())
      fail(where, "expected key=value, got '{}'", item);
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    const Option* opt = nullptr;
    for (const auto& o : mi->options)
      if (key == o.key) opt = &o;
    if (!opt) {
      if (mi->options.empty()) fail(where, "{} takes no options, got '{}'", mi->name, key);
      fail(where, "unknown option '{}' for {} (valid: {})", key, mi->name,
           fmt::join(option_keys(*mi), ", "));
    }
    if (!seen.insert(key).second) fail(where, "option '{}' given twice", key);
    if (opt->u64) {
      uint64_t v = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || end != value.data() + value.size())
        fail(where, "option {}: '{}' is not an unsigned integer", key, value);
      spec.*(opt->u64) = v;
    } else {
      int64_t v = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || end != value.data() + value.size() || v < opt->min || v > opt->max)
        fail(where, "option {}: '{}' is not an integer in [{}, {}]", key, value, opt->min, opt->max);
      spec.*(opt->i32) = int(v);
    }
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  return spec;
}

std::string LowRankSpec::to_string() const {
  const MethodInfo& mi = info(method);
  std::string s = mi.name;
  char sep = ':';
  for (const auto& o : mi.options) {
    if (o.u64)
      s += fmt::format("{}{}={}", sep, o.key, this->*(o.u64));
    else
      s += fmt::format("{}{}={}", sep, o.key, this->*(o.i32));
    sep = ',';
  }
  return s;
}

bool LowRankSpec::operator==(const LowRankSpec& o) const {
  if (method != o.method) return false;
  for (const auto& opt : info(method).options)
    if (opt.u64 ? this->*(opt.u64) != o.*(opt.u64) : this->*(opt.i32) != o.*(opt.i32))
      return false;
  return true;
}

}  // namespace lrq
