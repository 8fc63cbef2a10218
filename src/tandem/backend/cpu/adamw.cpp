// adamw family: bias-corrected Adam moments with decoupled weight decay, in place.
#include <cmath>

#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {

void CpuBackend::adamw(float* p, float* m, float* v, const float* g, size_t n, float lr,
                       float beta1, float beta2, float eps, float wd, int64_t t) {
  float c1 = 1.0f - (float)std::pow((double)beta1, (double)t);
  float c2 = 1.0f - (float)std::pow((double)beta2, (double)t);
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (size_t i = 0; i < n; ++i) {
    float mi = beta1 * m[i] + (1.0f - beta1) * g[i];
    float vi = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / c1, vhat = vi / c2;
    p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p[i]);
  }
}

}  // namespace tandem
