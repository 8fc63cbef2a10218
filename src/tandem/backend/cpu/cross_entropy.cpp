// cross-entropy family: fused log-softmax, loss and gradient per row.
#include <algorithm>
#include <cmath>
#include <vector>

#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/vexp.h"

namespace tandem {

void CpuBackend::cross_entropy(float* losses, float* dlogits, const float* logits,
                               const int32_t* targets, int N, int V, float dscale) {
#pragma omp parallel num_threads(threads_)
  {
    static thread_local std::vector<float> scratch;
    if (!dlogits && (int)scratch.size() < V) scratch.resize(V);
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float* x = logits + (size_t)n * V;
      // Exponentials go to the gradient row when there is one (it may alias x), else scratch.
      float* e = dlogits ? dlogits + (size_t)n * V : scratch.data();
      const int tgt = targets[n];
      if (tgt < 0) {
        losses[n] = 0.f;
        if (dlogits) std::fill(e, e + V, 0.f);
        continue;
      }
      float mx = x[0];
      for (int v = 1; v < V; ++v) mx = std::max(mx, x[v]);
      const float xt = x[tgt];  // read before e (which may alias x) is written
      const float sum = simd::exp_shift_sum(e, x, V, mx);
      losses[n] = mx + std::log(sum) - xt;
      if (dlogits) {
        const float k = dscale / sum;
        for (int v = 0; v < V; ++v) e[v] *= k;
        e[tgt] -= dscale;
      }
    }
  }
}

}  // namespace tandem
