// Backend registry: maps a backend name to its factory.
#include "tandem/backend/backend.h"
#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/error.h"

namespace tandem {

std::unique_ptr<Backend> make_backend(const std::string& name, int threads) {
  if (name == "cpu") return std::make_unique<CpuBackend>(threads);
  fail("[backend] unknown backend '" + name + "' (built: cpu)");
}

std::vector<std::string> backend_names() { return {"cpu"}; }

}  // namespace tandem
