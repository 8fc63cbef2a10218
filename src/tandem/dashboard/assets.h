// The dashboard page's files (its HTML, script and style, and the uPlot charting library from
// the npm registry), built into the binary by cmake/embed_assets.cmake.
#pragma once

#include <cstddef>
#include <vector>

namespace tandem {

struct Asset {
  const char* name;  // URL path without the leading slash
  const char* data;
  size_t size;
};
const std::vector<Asset>& dashboard_assets();

}  // namespace tandem
