// Implementation of the two failure paths.
#include "tandem/core/error.h"

#include <cstdio>
#include <cstdlib>

namespace tandem {

void fail(const std::string& msg) { throw Error(msg); }

void check_failed(const char* file, int line, const char* expr, const std::string& msg) {
  std::fprintf(stderr, "%s:%d: check failed: %s %s\n", file, line, expr, msg.c_str());
  std::abort();
}

}  // namespace tandem
