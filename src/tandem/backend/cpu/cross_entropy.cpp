// cross-entropy family: fused log-softmax, loss and gradient per row.
#include <algorithm>
#include <cmath>

#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {

void CpuBackend::cross_entropy(float* losses, float* dlogits, const float* logits,
                               const int32_t* targets, int N, int V, float dscale) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = logits + (size_t)n * V;
    float* d = dlogits ? dlogits + (size_t)n * V : nullptr;
    int tgt = targets[n];
    if (tgt < 0) {
      losses[n] = 0.f;
      if (d)
        for (int v = 0; v < V; ++v) d[v] = 0.f;
      continue;
    }
    float mx = x[0];
    for (int v = 1; v < V; ++v) mx = std::max(mx, x[v]);
    float sum = 0.f;
    for (int v = 0; v < V; ++v) sum += std::exp(x[v] - mx);
    float lse = mx + std::log(sum);
    losses[n] = lse - x[tgt];
    if (d) {
      float xt = x[tgt];  // read before d (which may alias x) is written
      for (int v = 0; v < V; ++v) d[v] = dscale * std::exp(x[v] - lse);
      d[tgt] = dscale * (std::exp(xt - lse) - 1.0f);
    }
  }
}

}  // namespace tandem
