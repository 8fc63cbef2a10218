// adamw family: bias-corrected Adam moments with decoupled weight decay, in place.
#include <cmath>

#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {

void CpuBackend::adamw(float* p, float* m, float* v, const float* g, size_t n, float lr,
                       float beta1, float beta2, float eps, float wd, int64_t t) {
  float c1 = 1.0f - (float)std::pow((double)beta1, (double)t);
  float c2 = 1.0f - (float)std::pow((double)beta2, (double)t);
  float* __restrict pp = p;
  float* __restrict mp = m;
  float* __restrict vp = v;
  const float* __restrict gp = g;
  const float inv_c1 = 1.0f / c1, inv_c2 = 1.0f / c2;
#pragma omp parallel for simd num_threads(threads_) schedule(static)
  for (size_t i = 0; i < n; ++i) {
    float mi = beta1 * mp[i] + (1.0f - beta1) * gp[i];
    float vi = beta2 * vp[i] + (1.0f - beta2) * gp[i] * gp[i];
    mp[i] = mi;
    vp[i] = vi;
    pp[i] -= lr * (mi * inv_c1 / (std::sqrt(vi * inv_c2) + eps) + wd * pp[i]);
  }
}

}  // namespace tandem
