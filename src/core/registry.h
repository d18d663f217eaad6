// A name -> entry table that files fill from static registrars (layer kinds, transform stages,
// quantization methods), so that adding an entry is one file. The table is a function-local
// static: registrars in other translation units may run before any other use of it.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace lrq {

template <class Entry>
class Registry {
 public:
  /// `what` names the kind of entry in messages ("layer kind", "method").
  explicit Registry(const char* what) : what_(what) {}
  /// Adds an entry; a name registered twice is a programming error, reported at start-up.
  bool add(const std::string& name, Entry e) {
    if (!entries_.emplace(name, std::move(e)).second) {
      std::fprintf(stderr, "lrquant: %s '%s' registered twice\n", what_, name.c_str());
      std::abort();
    }
    return true;
  }
  /// The entry, or null.
  const Entry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  /// Every name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [k, _] : entries_) out.push_back(k);
    return out;
  }
  /// "a, b, c" for error messages that list the valid names.
  std::string joined() const {
    std::string s;
    for (const auto& [k, _] : entries_) s += (s.empty() ? "" : ", ") + k;
    return s;
  }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }

 private:
  const char* what_;
  std::map<std::string, Entry> entries_;
};

}  // namespace lrq
