// cross-entropy family: fused log-softmax, loss, entropy and gradient per row.
#include <algorithm>
#include <cmath>
#include <vector>

#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/vexp.h"

namespace tandem {
namespace {

// Both kernels: row n's gradient weighs weights[n], or `scale` when weights is null.
void ce_rows(int threads, float* losses, float* entropies, float* dlogits, const float* logits,
             const int32_t* targets, const float* weights, float scale, int N, int V) {
#pragma omp parallel num_threads(threads)
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
        if (entropies) entropies[n] = 0.f;
        if (dlogits) std::fill(e, e + V, 0.f);
        continue;
      }
      float mx = x[0];
      for (int v = 1; v < V; ++v) mx = std::max(mx, x[v]);
      const float xt = x[tgt];  // read before e (which may alias x) is written
      const float sum = simd::exp_shift_sum(e, x, V, mx);
      const float lse = std::log(sum);
      losses[n] = mx + lse - xt;
      if (entropies) {
        // H = lse - sum_v p_v (x_v - mx); when e overwrote x, x_v - mx = log e_v.
        double px = 0.0;
        if (e != x)
          for (int v = 0; v < V; ++v) px += (double)e[v] * (x[v] - mx);
        else
          for (int v = 0; v < V; ++v)
            if (e[v] > 0.f) px += (double)e[v] * std::log(e[v]);
        entropies[n] = (float)((double)lse - px / sum);
      }
      if (dlogits) {
        const float w = weights ? weights[n] : scale;
        const float k = w / sum;
        for (int v = 0; v < V; ++v) e[v] *= k;
        e[tgt] -= w;
      }
    }
  }
}

}  // namespace

void CpuBackend::cross_entropy(float* losses, float* dlogits, const float* logits,
                               const int32_t* targets, int N, int V, float dscale) {
  ce_rows(threads_, losses, nullptr, dlogits, logits, targets, nullptr, dscale, N, V);
}

void CpuBackend::cross_entropy_rows(float* losses, float* entropies, float* dlogits,
                                    const float* logits, const int32_t* targets,
                                    const float* weights, int N, int V) {
  ce_rows(threads_, losses, entropies, dlogits, logits, targets, weights, 0.f, N, V);
}

}  // namespace tandem
