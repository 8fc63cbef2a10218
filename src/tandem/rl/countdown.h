// The countdown task: reach a target with some of the given numbers, each used at most once,
// and + - * / with parentheses. The expression is parsed by a recursive-descent parser and
// evaluated in exact rational arithmetic (division must not be by zero; intermediate results
// may be fractions).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tandem {

struct CountdownProblem {
  std::vector<int64_t> numbers;
  int64_t target = 0;
};

struct CountdownCheck {
  bool parsed = false;      // the expression is well formed
  bool numbers_ok = false;  // it uses only the given numbers, each at most once
  bool reached = false;     // its value equals the target
  std::string detail;       // what went wrong, for logs
};

// `expr`: the expression alone (e.g. "(3 + 5) * 7"); "= 56" after it is allowed.
CountdownCheck check_countdown(const std::string& expr, const CountdownProblem& p);
// The reference as written by `tandem data synth --task countdown`: {"numbers": [...],
// "target": N}. Throws Error naming what is malformed.
CountdownProblem parse_countdown_reference(const std::string& reference);

}  // namespace tandem
