#include "core/pattern.h"

#include <memory>

#include "core/error.h"

namespace lrq {

namespace {

constexpr int kMaxDepth = 64;
constexpr int kMaxRepeat = 100;
constexpr size_t kMaxProgram = 20000;

// The parsed pattern. Children are owned; the depth is bounded by kMaxDepth while parsing, so
// the recursive passes below stay shallow.
struct Node {
  enum Kind { Set, Cat, Alt, Repeat, Bol, Eol, Empty } kind = Empty;
  std::bitset<256> set;
  std::vector<std::unique_ptr<Node>> kids;
  int min = 0, max = 0;  // Repeat; max < 0: unbounded
};
using NodeP = std::unique_ptr<Node>;

}  // namespace

class PatternCompiler {
 public:
  PatternCompiler(std::string_view p, std::string_view where) : p_(p), where_(where) {}

  void compile(Pattern& out) {
    NodeP root = alt(0);
    if (i_ < p_.size()) bad(p_[i_] == ')' ? "unbalanced ')'" : "unexpected character");
    out_ = &out;
    emit(*root);
    push({Pattern::Op::Match});
  }

 private:
  std::string_view p_, where_;
  size_t i_ = 0;
  Pattern* out_ = nullptr;

  [[noreturn]] void bad(const std::string& why) const {
    fail(where_, "invalid pattern '{}': {} at position {}", std::string(p_), why, i_);
  }
  bool more() const { return i_ < p_.size(); }
  char peek() const { return p_[i_]; }

  NodeP make(Node::Kind k) {
    auto n = std::make_unique<Node>();
    n->kind = k;
    return n;
  }

  NodeP alt(int depth) {
    if (depth > kMaxDepth) bad("groups nested deeper than " + std::to_string(kMaxDepth));
    NodeP first = cat(depth);
    if (!more() || peek() != '|') return first;
    NodeP a = make(Node::Alt);
    a->kids.push_back(std::move(first));
    while (more() && peek() == '|') {
      ++i_;
      a->kids.push_back(cat(depth));
    }
    return a;
  }

  NodeP cat(int depth) {
    NodeP c = make(Node::Cat);
    while (more() && peek() != '|' && peek() != ')') c->kids.push_back(repeat(depth));
    return c;
  }

  int number() {
    if (!more() || peek() < '0' || peek() > '9') bad("expected a number");
    int v = 0;
    while (more() && peek() >= '0' && peek() <= '9') {
      v = v * 10 + (peek() - '0');
      if (v > kMaxRepeat) bad("repeat count above " + std::to_string(kMaxRepeat));
      ++i_;
    }
    return v;
  }

  NodeP repeat(int depth) {
    NodeP a = atom(depth);
    for (int stacked = 0; more(); ++stacked) {
      const char c = peek();
      int lo, hi;
      if (c == '*') lo = 0, hi = -1;
      else if (c == '+') lo = 1, hi = -1;
      else if (c == '?') lo = 0, hi = 1;
      else if (c == '{') {
        ++i_;
        lo = number();
        hi = lo;
        if (more() && peek() == ',') {
          ++i_;
          hi = more() && peek() == '}' ? -1 : number();
        }
        if (!more() || peek() != '}') bad("expected '}'");
        if (hi >= 0 && hi < lo) bad("{n,m} with m < n");
      } else {
        break;
      }
      if (stacked == 4) bad("more than four quantifiers in a row");
      ++i_;
      if (more() && peek() == '?') bad("lazy quantifiers are not supported");
      if (a->kind == Node::Bol || a->kind == Node::Eol) bad("a quantifier on an anchor");
      NodeP r = make(Node::Repeat);
      r->min = lo;
      r->max = hi;
      r->kids.push_back(std::move(a));
      a = std::move(r);
    }
    return a;
  }

  static std::bitset<256> class_of(char e) {
    std::bitset<256> s;
    auto range = [&](int a, int b) {
      for (int c = a; c <= b; ++c) s.set(size_t(c));
    };
    switch (e) {
      case 'd': case 'D': range('0', '9'); break;
      case 'w': case 'W': range('0', '9'); range('a', 'z'); range('A', 'Z'); s.set('_'); break;
      default: for (char c : {' ', '\t', '\n', '\r', '\f', '\v'}) s.set(size_t(uint8_t(c)));
    }
    if (e == 'D' || e == 'W' || e == 'S') s.flip();
    return s;
  }

  // After a backslash: a class, or an escaped character that is not alphanumeric.
  std::bitset<256> escape() {
    if (!more()) bad("a trailing backslash");
    const char e = p_[i_++];
    if (e == 'd' || e == 'D' || e == 'w' || e == 'W' || e == 's' || e == 'S') return class_of(e);
    if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9')) {
      --i_;
      bad(std::string("unsupported escape \\") + e);
    }
    std::bitset<256> s;
    s.set(size_t(uint8_t(e)));
    return s;
  }

  std::bitset<256> bracket() {  // after '['
    std::bitset<256> s;
    bool neg = false;
    if (more() && peek() == '^') neg = true, ++i_;
    bool first = true;
    while (true) {
      if (!more()) bad("unterminated '['");
      char c = peek();
      if (c == ']' && !first) break;
      first = false;
      ++i_;
      if (c == '\\') {
        const std::bitset<256> e = escape();
        if (e.count() != 1) {
          s |= e;
          continue;
        }
        for (int k = 0; k < 256; ++k)
          if (e.test(size_t(k))) c = char(k);
      }
      if (more() && peek() == '-' && i_ + 1 < p_.size() && p_[i_ + 1] != ']') {
        ++i_;
        char hi = p_[i_++];
        if (hi == '\\') {
          const std::bitset<256> e = escape();
          if (e.count() != 1) bad("a class as the end of a range");
          for (int k = 0; k < 256; ++k)
            if (e.test(size_t(k))) hi = char(k);
        }
        if (uint8_t(hi) < uint8_t(c)) bad("a reversed range in '[...]'");
        for (int k = uint8_t(c); k <= uint8_t(hi); ++k) s.set(size_t(k));
      } else {
        s.set(size_t(uint8_t(c)));
      }
    }
    ++i_;  // ']'
    if (neg) s.flip();
    return s;
  }

  NodeP atom(int depth) {
    const char c = peek();
    ++i_;
    if (c == '(') {
      if (more() && peek() == '?') {
        if (i_ + 1 < p_.size() && p_[i_ + 1] == ':') i_ += 2;
        else bad("lookaround and named groups are not supported");
      }
      NodeP a = alt(depth + 1);
      if (!more() || peek() != ')') bad("unbalanced '('");
      ++i_;
      return a;
    }
    if (c == '*' || c == '+' || c == '?' || c == '{') {
      --i_;
      bad("a quantifier with nothing to repeat");
    }
    if (c == '^') return make(Node::Bol);
    if (c == '$') return make(Node::Eol);
    NodeP n = make(Node::Set);
    if (c == '.') n->set.set().reset('\n');
    else if (c == '[') n->set = bracket();
    else if (c == '\\') n->set = escape();
    else if (c == ']' || c == '}') n->set.set(size_t(uint8_t(c)));
    else n->set.set(size_t(uint8_t(c)));
    return n;
  }

  // ---------------------------------------------------------------- code
  int32_t pc() const { return int32_t(out_->prog_.size()); }
  int32_t push(Pattern::Inst in) {
    if (out_->prog_.size() >= kMaxProgram)
      fail(where_, "invalid pattern '{}': it compiles to more than {} steps", std::string(p_),
           kMaxProgram);
    out_->prog_.push_back(in);
    return pc() - 1;
  }

  void emit(const Node& n) {
    using Op = Pattern::Op;
    switch (n.kind) {
      case Node::Empty: return;
      case Node::Bol: push({Op::Bol}); return;
      case Node::Eol: push({Op::Eol}); return;
      case Node::Set:
        out_->sets_.push_back(n.set);
        push({Op::Set, int32_t(out_->sets_.size() - 1)});
        return;
      case Node::Cat:
        for (const NodeP& k : n.kids) emit(*k);
        return;
      case Node::Alt: {
        // split L1, next; L1: a; jmp end; next: split L2, ...; last alternative falls through.
        std::vector<int32_t> jumps;
        for (size_t k = 0; k < n.kids.size(); ++k) {
          if (k + 1 < n.kids.size()) {
            const int32_t s = push({Op::Split});
            out_->prog_[size_t(s)].x = pc();
            emit(*n.kids[k]);
            jumps.push_back(push({Op::Jmp}));
            out_->prog_[size_t(s)].y = pc();
          } else {
            emit(*n.kids[k]);
          }
        }
        for (int32_t j : jumps) out_->prog_[size_t(j)].x = pc();
        return;
      }
      case Node::Repeat: {
        const Node& e = *n.kids[0];
        for (int k = 0; k < n.min; ++k) emit(e);
        if (n.max < 0) {  // L: split body, end; body: e; jmp L
          const int32_t s = push({Op::Split});
          out_->prog_[size_t(s)].x = pc();
          emit(e);
          push({Op::Jmp, s});
          out_->prog_[size_t(s)].y = pc();
        } else {
          std::vector<int32_t> splits;
          for (int k = n.min; k < n.max; ++k) {
            splits.push_back(push({Op::Split}));
            out_->prog_[size_t(splits.back())].x = pc();
            emit(e);
          }
          for (int32_t s : splits) out_->prog_[size_t(s)].y = pc();
        }
        return;
      }
    }
  }
};

Pattern::Pattern(std::string_view pattern, std::string_view where) : src_(pattern) {
  PatternCompiler(src_, where).compile(*this);
}

bool Pattern::search(std::string_view text) const {
  const size_t np = prog_.size();
  std::vector<int32_t> cur, next, stack;
  std::vector<size_t> mark(np, size_t(-1));  // the step a pc was last added at
  cur.reserve(np);
  next.reserve(np);
  // Adds pc and everything reachable without consuming a character, at position `at`.
  auto add = [&](std::vector<int32_t>& list, int32_t start, size_t at, size_t step) {
    stack.push_back(start);
    while (!stack.empty()) {
      const int32_t p = stack.back();
      stack.pop_back();
      if (mark[size_t(p)] == step) continue;
      mark[size_t(p)] = step;
      const Inst& in = prog_[size_t(p)];
      switch (in.op) {
        case Op::Jmp: stack.push_back(in.x); break;
        case Op::Split:
          stack.push_back(in.y);
          stack.push_back(in.x);
          break;
        case Op::Bol:
          if (at == 0) stack.push_back(p + 1);
          break;
        case Op::Eol:
          if (at == text.size()) stack.push_back(p + 1);
          break;
        default: list.push_back(p);
      }
    }
  };
  for (size_t at = 0; at <= text.size(); ++at) {
    add(cur, 0, at, 2 * at);  // a match may start here (search semantics)
    for (int32_t p : cur)
      if (prog_[size_t(p)].op == Op::Match) return true;
    if (at == text.size()) break;
    next.clear();
    const size_t c = uint8_t(text[at]);
    for (int32_t p : cur) {
      const Inst& in = prog_[size_t(p)];
      if (in.op == Op::Set && sets_[size_t(in.x)].test(c)) add(next, p + 1, at + 1, 2 * at + 2);
    }
    std::swap(cur, next);
  }
  return false;
}

}  // namespace lrq
