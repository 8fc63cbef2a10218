// rmsnorm family: out = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps).
#include <omp.h>

#include <cmath>

#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {

void CpuBackend::rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N,
                                 int C, float eps) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* xr = x + (size_t)n * C;
    float* o = out + (size_t)n * C;
    float ss = 0.f;
    for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
    float r = 1.0f / std::sqrt(ss / C + eps);
    rstd[n] = r;
    for (int c = 0; c < C; ++c) o[c] = xr[c] * r * w[c];
  }
}

void CpuBackend::rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                                  const float* w, const float* rstd, int N, int C) {
#pragma omp parallel num_threads(threads_)
  {
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* xr = x + (size_t)n * C;
      const float* g = dout + (size_t)n * C;
      float* d = dx + (size_t)n * C;
      float r = rstd[n];
      float dot = 0.f;  // sum_c g_c w_c x_c
      for (int c = 0; c < C; ++c) dot += g[c] * w[c] * xr[c];
      float k = dot * r * r * r / C;
      for (int c = 0; c < C; ++c) d[c] = g[c] * w[c] * r - xr[c] * k;
    }
    // dw: threads own column ranges, rows summed in order.
    int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    int c0 = (int)((long)C * tid / nt), c1 = (int)((long)C * (tid + 1) / nt);
    for (int n = 0; n < N; ++n) {
      const float* xr = x + (size_t)n * C;
      const float* g = dout + (size_t)n * C;
      float r = rstd[n];
      for (int c = c0; c < c1; ++c) dw[c] += g[c] * xr[c] * r;
    }
  }
}

}  // namespace tandem
