// Layer-name patterns for --layer-recipe: a regular-expression subset matched by a Thompson NFA
// (a Pike VM without captures), so matching takes time linear in pattern x name and no input
// can make it backtrack without bound or recurse off the stack, unlike std::regex (measured: a
// pattern of 20k nested groups overflowed the stack, (a*)*b never finished).
//
// Syntax (ECMAScript-like): literals; `.`; `\.` and other escaped punctuation; `\d \w \s` and
// their negations; classes `[a-z0-9_]`, `[^...]`; groups `(...)` and `(?:...)`; `|`; the
// quantifiers `* + ?`, `{n}`, `{n,}`, `{n,m}` (n, m <= 100); anchors `^ $`. Search semantics:
// the pattern may match anywhere in the name unless anchored. Anything else (backreferences,
// lookaround, lazy quantifiers) is an Error naming the position; so is nesting deeper than 64
// groups or a compiled pattern beyond 20000 steps.
#pragma once
#include <bitset>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lrq {

class Pattern {
 public:
  /// Compiles `pattern`; an Error ("<where>: invalid pattern '...': <why> at <pos>") if it is
  /// outside the syntax above.
  explicit Pattern(std::string_view pattern, std::string_view where = "pattern");
  /// Whether the pattern matches somewhere in `text`.
  bool search(std::string_view text) const;
  const std::string& str() const { return src_; }

 private:
  enum class Op : uint8_t { Set, Split, Jmp, Bol, Eol, Match };
  struct Inst {
    Op op;
    int32_t x = 0, y = 0;  // Split: both targets; Jmp: x; Set: index into sets_
  };
  std::string src_;
  std::vector<Inst> prog_;
  std::vector<std::bitset<256>> sets_;
  friend class PatternCompiler;
};

}  // namespace lrq
