// The countdown checker (see countdown.h): a recursive-descent parser over exact rationals.
#include "tandem/rl/countdown.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <numeric>
#include <stdexcept>

#include "tandem/core/error.h"

namespace tandem {
namespace {

struct Rational {
  int64_t num = 0, den = 1;  // den > 0, reduced
};

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Rational make(__int128 n, __int128 d) {
  if (d == 0) throw ParseError("division by zero");
  if (d < 0) n = -n, d = -d;
  __int128 a = n < 0 ? -n : n, b = d;
  while (b) {
    const __int128 t = a % b;
    a = b;
    b = t;
  }
  if (a > 1) n /= a, d /= a;
  const __int128 lim = (__int128)1 << 62;
  if (n > lim || n < -lim || d > lim) throw ParseError("a value grows beyond 2^62");
  return {(int64_t)n, (int64_t)d};
}

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}
  Rational parse() {
    Rational v = expr();
    skip();
    if (pos_ < s_.size() && s_[pos_] == '=') pos_ = s_.size();  // "... = 56": the claim is ignored
    skip();
    if (pos_ != s_.size()) throw ParseError("unexpected '" + s_.substr(pos_, 1) + "'");
    return v;
  }
  std::vector<int64_t> used;

 private:
  void skip() {
    while (pos_ < s_.size() && std::isspace((unsigned char)s_[pos_])) ++pos_;
  }
  bool eat(char c) {
    skip();
    if (pos_ < s_.size() && s_[pos_] == c) return ++pos_, true;
    return false;
  }
  Rational expr() {
    Rational v = term();
    for (;;) {
      if (eat('+')) {
        const Rational r = term();
        v = make((__int128)v.num * r.den + (__int128)r.num * v.den, (__int128)v.den * r.den);
      } else if (eat('-')) {
        const Rational r = term();
        v = make((__int128)v.num * r.den - (__int128)r.num * v.den, (__int128)v.den * r.den);
      } else {
        return v;
      }
    }
  }
  Rational term() {
    Rational v = factor();
    for (;;) {
      if (eat('*') || eat('x') || eat('X')) {
        const Rational r = factor();
        v = make((__int128)v.num * r.num, (__int128)v.den * r.den);
      } else if (eat('/')) {
        const Rational r = factor();
        v = make((__int128)v.num * r.den, (__int128)v.den * r.num);
      } else {
        return v;
      }
    }
  }
  Rational factor() {
    if (++depth_ > 64) throw ParseError("nested too deeply");
    struct Leave {
      int& d;
      ~Leave() { --d; }
    } leave{depth_};
    if (eat('(')) {
      Rational v = expr();
      if (!eat(')')) throw ParseError("missing ')'");
      return v;
    }
    skip();
    size_t end = pos_;
    while (end < s_.size() && std::isdigit((unsigned char)s_[end])) ++end;
    if (end == pos_)
      throw ParseError(pos_ < s_.size() ? "unexpected '" + s_.substr(pos_, 1) + "'"
                                        : "the expression ends early");
    if (end - pos_ > 12) throw ParseError("a number is too long");
    const int64_t n = std::stoll(s_.substr(pos_, end - pos_));
    pos_ = end;
    used.push_back(n);
    return {n, 1};
  }
  const std::string& s_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

CountdownCheck check_countdown(const std::string& expr, const CountdownProblem& p) {
  CountdownCheck c;
  Parser parser(expr);
  Rational v;
  try {
    v = parser.parse();
  } catch (const ParseError& e) {
    c.detail = std::string("not an expression: ") + e.what();
    return c;
  }
  c.parsed = true;
  std::vector<int64_t> avail = p.numbers;
  c.numbers_ok = true;
  for (int64_t n : parser.used) {
    auto it = std::find(avail.begin(), avail.end(), n);
    if (it == avail.end()) {
      c.numbers_ok = false;
      c.detail = "uses " + std::to_string(n) + ", which is not one of the numbers left";
      break;
    }
    avail.erase(it);
  }
  c.reached = c.numbers_ok && v.den == 1 && v.num == p.target;
  if (c.numbers_ok && !c.reached) {  // (in steps: GCC 12 warns falsely on one expression)
    c.detail = "reaches ";
    c.detail += std::to_string(v.num);
    if (v.den != 1) c.detail += "/" + std::to_string(v.den);
    c.detail += ", not ";
    c.detail += std::to_string(p.target);
  }
  return c;
}

CountdownProblem parse_countdown_reference(const std::string& reference) {
  CountdownProblem p;
  try {
    const auto j = nlohmann::json::parse(reference);
    p.numbers = j.at("numbers").get<std::vector<int64_t>>();
    p.target = j.at("target").get<int64_t>();
  } catch (const std::exception& e) {
    fail("[verifier] a countdown reference must be {\"numbers\": [...], \"target\": N}, not '" +
         reference.substr(0, 80) + "' (" + e.what() + ")");
  }
  if (p.numbers.empty()) fail("[verifier] a countdown reference has no numbers");
  return p;
}

}  // namespace tandem
