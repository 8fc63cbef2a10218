// Minimal logging to stderr with a component prefix; progress lines go through here too.
#pragma once

#include <cstdio>
#include <string>

namespace tandem {

inline void log_info(const std::string& msg) { std::fprintf(stderr, "%s\n", msg.c_str()); }

}  // namespace tandem
