// swiglu family: out = silu(gate) * up, with gate and up side by side in each row.
#include <algorithm>

#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/vexp.h"

namespace tandem {
namespace {
constexpr int kBlock = 256;  // sigmoid computed a block at a time into a stack buffer

// s[i] = sigmoid(g[i]) for i < n
inline void sigmoid(float* s, const float* g, int n) {
  for (int i = 0; i < n; ++i) s[i] = -g[i];
  simd::exp_inplace(s, n);
  for (int i = 0; i < n; ++i) s[i] = 1.0f / (1.0f + s[i]);
}
}  // namespace

void CpuBackend::swiglu_forward(float* out, const float* gateup, int N, int F) {
  // A few rows (decoding) cost less than waking the threads.
#pragma omp parallel for num_threads(threads_) schedule(static) if ((size_t)N * F >= 16384)
  for (int n = 0; n < N; ++n) {
    const float* g = gateup + (size_t)n * 2 * F;
    const float* u = g + F;
    float* o = out + (size_t)n * F;
    alignas(64) float s[kBlock];
    for (int i0 = 0; i0 < F; i0 += kBlock) {
      const int m = std::min(kBlock, F - i0);
      sigmoid(s, g + i0, m);
      for (int i = 0; i < m; ++i) o[i0 + i] = g[i0 + i] * s[i] * u[i0 + i];
    }
  }
}

void CpuBackend::swiglu_backward(float* dgateup, const float* dout, const float* gateup, int N,
                                 int F) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* g = gateup + (size_t)n * 2 * F;
    const float* u = g + F;
    const float* d = dout + (size_t)n * F;
    float* dg = dgateup + (size_t)n * 2 * F;
    float* du = dg + F;
    alignas(64) float s[kBlock];
    for (int i0 = 0; i0 < F; i0 += kBlock) {
      const int m = std::min(kBlock, F - i0);
      sigmoid(s, g + i0, m);
      for (int j = 0; j < m; ++j) {
        const int i = i0 + j;
        const float sg = s[j], silu = g[i] * sg;
        du[i] = d[i] * silu;
        dg[i] = d[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
      }
    }
  }
}

}  // namespace tandem
