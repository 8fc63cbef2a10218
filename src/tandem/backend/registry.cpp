// Backend registry: maps a backend name to its factory.
#include "tandem/backend/backend.h"
#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/error.h"
#if defined(TANDEM_HAVE_CUDA)
#include "tandem/backend/cuda/cuda_backend.h"
#endif

namespace tandem {

std::unique_ptr<Backend> make_backend(const std::string& name, int threads) {
  if (name == "cpu") return std::make_unique<CpuBackend>(threads);
#if defined(TANDEM_HAVE_CUDA)
  if (name == "cuda") return make_cuda_backend(true);
  if (name == "cuda-fp32") return make_cuda_backend(false);
#endif
  std::string built;
  for (const auto& n : backend_names()) built += (built.empty() ? "" : ", ") + n;
  fail("[backend] unknown backend '" + name + "' (built: " + built + ")");
}

std::vector<std::string> backend_names() {
#if defined(TANDEM_HAVE_CUDA)
  return {"cpu", "cuda", "cuda-fp32"};
#else
  return {"cpu"};
#endif
}

}  // namespace tandem
