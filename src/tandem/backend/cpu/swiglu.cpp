// swiglu family: out = silu(gate) * up, with gate and up side by side in each row.
#include <cmath>

#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {

void CpuBackend::swiglu_forward(float* out, const float* gateup, int N, int F) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* g = gateup + (size_t)n * 2 * F;
    const float* u = g + F;
    float* o = out + (size_t)n * F;
    for (int i = 0; i < F; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
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
    for (int i = 0; i < F; ++i) {
      float s = 1.0f / (1.0f + std::exp(-g[i]));
      float silu = g[i] * s;
      du[i] = d[i] * silu;
      dg[i] = d[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
  }
}

}  // namespace tandem
