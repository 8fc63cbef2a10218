// CPU backend: memory (host memory, 64-byte aligned) and construction.
#include "tandem/backend/cpu/cpu_backend.h"

#include <omp.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "tandem/backend/cpu/blas.h"
#include "tandem/core/cpu_features.h"
#include "tandem/core/error.h"

namespace tandem {

CpuBackend::CpuBackend(int threads) : threads_(threads > 0 ? threads : omp_get_num_procs()) {}

std::string CpuBackend::describe() const {
  const CpuFeatures& f = host_cpu();
  return "cpu " + f.model_name + " (family " + std::to_string(f.family) + " model " +
         std::to_string(f.model) + ", " + isa_name(widest_isa(f)) + ": " + feature_list(f) +
         "); own kernels built for " + compiled_isa() + ", quantized matmul " +
         qvariant_name(qvariant_best()) + "; gemm " + blas::describe() + "; " +
         std::to_string(threads_) + " threads";
}

// Large buffers come straight from mmap: the kernel hands out zeroed pages on first touch, so
// there is no memset pass over gigabytes of activations at startup (a restarted run's resume
// latency was mostly that).
namespace {
constexpr size_t kMmapMin = size_t(1) << 20;
std::mutex g_maps_mu;
std::unordered_map<void*, size_t> g_maps;
}  // namespace

void* CpuBackend::alloc(size_t bytes) {
  if (bytes >= kMmapMin) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("[cpu] out of memory allocating " + std::to_string(bytes) + " bytes");
    std::lock_guard<std::mutex> lock(g_maps_mu);
    g_maps[p] = bytes;
    return p;
  }
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!p) fail("[cpu] out of memory allocating " + std::to_string(bytes) + " bytes");
  std::memset(p, 0, rounded);
  return p;
}

void CpuBackend::release(void* ptr) {
  if (!ptr) return;
  {
    std::lock_guard<std::mutex> lock(g_maps_mu);
    auto it = g_maps.find(ptr);
    if (it != g_maps.end()) {
      munmap(ptr, it->second);
      g_maps.erase(it);
      return;
    }
  }
  std::free(ptr);
}
void CpuBackend::to_device(void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); }
void CpuBackend::to_host(void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); }
void CpuBackend::zero(void* ptr, size_t n) { std::memset(ptr, 0, n); }

}  // namespace tandem
