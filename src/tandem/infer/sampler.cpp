// Sampling on the host from one row of logits.
#include "tandem/infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tandem/core/rng.h"

namespace tandem {

int32_t argmax(const std::vector<float>& logits) {
  return (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

int32_t sample_token(const std::vector<float>& logits, const SamplingParams& p, uint64_t position) {
  if (p.temperature <= 0.f) return argmax(logits);
  const int V = (int)logits.size();
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  // Highest first; ties broken by id so the order is fully determined.
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  int keep = (p.top_k > 0 && p.top_k < V) ? p.top_k : V;
  std::vector<double> prob(keep);
  double mx = logits[idx[0]], sum = 0;
  for (int i = 0; i < keep; ++i) {
    prob[i] = std::exp((logits[idx[i]] - mx) / p.temperature);
    sum += prob[i];
  }
  if (p.top_p < 1.f) {
    double cum = 0;
    int cut = keep;
    for (int i = 0; i < keep; ++i) {
      cum += prob[i] / sum;
      if (cum >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = std::accumulate(prob.begin(), prob.begin() + keep, 0.0);
  }
  double r = (double)rng_uniform(p.seed, kStreamSample, position) * sum;
  for (int i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r < 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace tandem
