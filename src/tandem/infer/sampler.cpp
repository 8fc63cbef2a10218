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
  const bool top_k = p.top_k > 0 && p.top_k < V, top_p = p.top_p < 1.f;
  // Candidates: every token in id order when nothing filters (no sort: the serving hot path),
  // otherwise highest first, ties broken by id, so the order is fully determined. With top-k
  // only the k best are selected (nth_element) and sorted.
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  int keep = V;
  if (top_k || top_p) {
    auto higher = [&](int32_t a, int32_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    };
    if (top_k) {
      keep = p.top_k;
      std::nth_element(idx.begin(), idx.begin() + keep, idx.end(), higher);
    }
    std::sort(idx.begin(), idx.begin() + keep, higher);
  }
  const float mx = logits[top_k || top_p ? idx[0] : argmax(logits)], inv_t = 1.f / p.temperature;
  std::vector<double> prob(keep);
  double sum = 0;
  for (int i = 0; i < keep; ++i) {
    prob[i] = std::exp((logits[idx[i]] - mx) * inv_t);  // float exp: the weights need no more
    sum += prob[i];
  }
  if (top_p) {
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
  int last = 0;  // if rounding leaves r >= 0 at the end: the last token with any weight
  for (int i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r < 0) return idx[i];
    if (prob[i] > 0) last = i;
  }
  return idx[last];
}

}  // namespace tandem
