// Error handling: expected failures throw tandem::Error with a message that names the thing
// that was wrong; programmer errors abort through TANDEM_CHECK with file:line.
#pragma once

#include <stdexcept>
#include <string>

namespace tandem {

// An expected failure (bad input, missing file, corrupt data). Caught once at the CLI boundary.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

[[noreturn]] void fail(const std::string& msg);
[[noreturn]] void check_failed(const char* file, int line, const char* expr,
                               const std::string& msg);

}  // namespace tandem

#define TANDEM_CHECK(cond, ...)                                                               \
  do {                                                                                        \
    if (!(cond)) ::tandem::check_failed(__FILE__, __LINE__, #cond, std::string{__VA_ARGS__}); \
  } while (0)
