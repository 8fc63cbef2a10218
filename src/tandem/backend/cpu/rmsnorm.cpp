// rmsnorm family: out = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps).
#include <omp.h>

#include <cmath>

#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {

namespace {
// Sum of squares in sixteen lanes (vectorizable without reassociation), combined in lane
// order, then the tail.
inline float sum_squares_row(const float* x, int C) {
  float lane[16] = {};
  int c = 0;
  for (; c + 16 <= C; c += 16)
    for (int k = 0; k < 16; ++k) lane[k] += x[c + k] * x[c + k];
  float ss = 0.f;
  for (float l : lane) ss += l;
  for (; c < C; ++c) ss += x[c] * x[c];
  return ss;
}
}  // namespace

void CpuBackend::rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N,
                                 int C, float eps) {
  // A few rows (a decoding step) cost less than waking the other threads.
#pragma omp parallel for num_threads(threads_) schedule(static) if ((size_t)N * C >= 32768)
  for (int n = 0; n < N; ++n) {
    const float* xr = x + (size_t)n * C;
    float* o = out + (size_t)n * C;
    const float ss = sum_squares_row(xr, C);
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
