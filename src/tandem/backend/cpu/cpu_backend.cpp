// CPU backend: memory (host memory, 64-byte aligned) and construction.
#include "tandem/backend/cpu/cpu_backend.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "tandem/core/error.h"

namespace tandem {

CpuBackend::CpuBackend(int threads) : threads_(threads > 0 ? threads : omp_get_num_procs()) {}

void* CpuBackend::alloc(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!p) fail("[cpu] out of memory allocating " + std::to_string(bytes) + " bytes");
  std::memset(p, 0, rounded);
  return p;
}

void CpuBackend::release(void* ptr) { std::free(ptr); }
void CpuBackend::to_device(void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); }
void CpuBackend::to_host(void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); }
void CpuBackend::zero(void* ptr, size_t n) { std::memset(ptr, 0, n); }

}  // namespace tandem
