// Sampling on the host from one row of logits.
#include "tandem/infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "tandem/core/rng.h"
#include "tandem/core/vexp.h"

namespace tandem {

int32_t argmax(std::span<const float> logits) {
  return (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

namespace {

// Plain temperature sampling over the whole vocabulary, without building an order: weights
// exp((l - max) / T) in float (vectorized), summed per block of 64 in a fixed lane order, and
// the draw located block by block, then within its block.
int32_t sample_dense(std::span<const float> logits, float inv_t, double u) {
  constexpr int kB = 64;
  const int V = (int)logits.size(), nb = (V + kB - 1) / kB;
  static thread_local std::vector<float> w, block;
  w.resize(V);
  block.assign(nb, 0.f);
  const float mx = logits[argmax(logits)];
  for (int i = 0; i < V; ++i) w[i] = (logits[i] - mx) * inv_t;
  simd::exp_inplace(w.data(), V);
  double sum = 0;
  for (int b = 0; b < nb; ++b) {
    const int i0 = b * kB, i1 = std::min(V, i0 + kB);
    float lane[16] = {};
    int i = i0;
    for (; i + 16 <= i1; i += 16)
      for (int k = 0; k < 16; ++k) lane[k] += w[i + k];
    float part = 0.f;
    for (float l : lane) part += l;
    for (; i < i1; ++i) part += w[i];
    block[b] = part;
    sum += part;
  }
  double r = u * sum;
  int b = 0, last_block = 0;  // if rounding leaves r >= 0 at the end: the last block with weight
  for (; b < nb; ++b) {
    if (r < block[b]) break;
    r -= block[b];
    if (block[b] > 0) last_block = b;
  }
  if (b == nb) {
    b = last_block;
    r = block[b];
  }
  const int i0 = b * kB, i1 = std::min(V, i0 + kB);
  int last = i0;
  for (int i = i0; i < i1; ++i) {
    r -= w[i];
    if (r < 0) return i;
    if (w[i] > 0) last = i;
  }
  return last;
}

}  // namespace

int32_t sample_token(std::span<const float> logits, const SamplingParams& p, uint64_t position) {
  if (p.temperature <= 0.f) return argmax(logits);
  const int V = (int)logits.size();
  const bool top_k = p.top_k > 0 && p.top_k < V, top_p = p.top_p < 1.f;
  if (!top_k && !top_p)
    return sample_dense(logits, 1.f / p.temperature, rng_uniform(p.seed, kStreamSample, position));
  // Candidates highest first, ties broken by id, so the order is fully determined. With top-k
  // only the k best are selected (nth_element) and sorted.
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  auto higher = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  int keep = V;
  if (top_k) {
    keep = p.top_k;
    std::nth_element(idx.begin(), idx.begin() + keep, idx.end(), higher);
  }
  std::sort(idx.begin(), idx.begin() + keep, higher);
  const float mx = logits[idx[0]], inv_t = 1.f / p.temperature;
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
