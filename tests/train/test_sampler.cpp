// sample_token: reproducible by (seed, position), greedy limits of top-k / top-p / temperature,
// and draws that follow the softmax of the kept tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "tandem/core/rng.h"
#include "tandem/infer/sampler.h"

namespace tandem {
namespace {

std::vector<float> random_logits(uint64_t seed, int V = 300, float scale = 1.0f) {
  std::vector<float> l(V);
  for (int i = 0; i < V; ++i) l[i] = scale * rng_normal(seed, 7, i);
  return l;
}

std::vector<int32_t> draw(const std::vector<float>& logits, const SamplingParams& p, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(sample_token(logits, p, i));
  return out;
}

TEST(Sampler, SameSeedSameTokens) {
  auto l = random_logits(1);
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_k = 50;
  p.top_p = 0.95f;
  p.seed = 123;
  EXPECT_EQ(draw(l, p, 64), draw(l, p, 64));
}

TEST(Sampler, DifferentSeedsDiffer) {
  auto l = random_logits(2);
  SamplingParams a, b;
  a.seed = 1;
  b.seed = 2;
  auto ta = draw(l, a, 64), tb = draw(l, b, 64);
  EXPECT_NE(ta, tb);
  // And the draws vary along positions, not one token repeated.
  EXPECT_GT(std::set<int32_t>(ta.begin(), ta.end()).size(), 10u);
}

TEST(Sampler, GreedyLimits) {
  for (uint64_t s = 0; s < 50; ++s) {
    auto l = random_logits(100 + s);
    const int32_t best = argmax(l);
    EXPECT_EQ(best, std::max_element(l.begin(), l.end()) - l.begin());
    SamplingParams g;
    g.temperature = 0;
    g.seed = s;
    EXPECT_EQ(sample_token(l, g, s), best);
    SamplingParams k1;
    k1.top_k = 1;
    k1.temperature = 1.5f;
    k1.seed = s;
    EXPECT_EQ(sample_token(l, k1, s), best);
    SamplingParams p0;
    p0.top_p = 1e-6f;
    p0.temperature = 1.5f;
    p0.seed = s;
    EXPECT_EQ(sample_token(l, p0, s), best);
  }
}

TEST(Sampler, TopKKeepsOnlyTheKBest) {
  auto l = random_logits(3, 300, 0.1f);  // nearly flat: without top-k almost anything comes up
  std::vector<int32_t> order(l.size());
  for (size_t i = 0; i < l.size(); ++i) order[i] = (int32_t)i;
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  std::set<int32_t> top3(order.begin(), order.begin() + 3);
  SamplingParams p;
  p.top_k = 3;
  p.seed = 9;
  std::set<int32_t> seen;
  for (int32_t t : draw(l, p, 300)) {
    EXPECT_TRUE(top3.count(t)) << t;
    seen.insert(t);
  }
  EXPECT_EQ(seen, top3);
}

TEST(Sampler, FrequenciesFollowSoftmaxAndNucleus) {
  const std::vector<float> l = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  const int n = 20000;
  SamplingParams p;
  p.seed = 77;
  std::vector<int> count(3);
  for (int32_t t : draw(l, p, n)) ++count[t];
  EXPECT_NEAR(count[0] / (double)n, 0.2, 0.02);
  EXPECT_NEAR(count[1] / (double)n, 0.5, 0.02);
  EXPECT_NEAR(count[2] / (double)n, 0.3, 0.02);

  // top_p 0.75: the nucleus is {1, 2} (0.5 + 0.3 >= 0.75), renormalized to 5/8 and 3/8.
  p.top_p = 0.75f;
  count.assign(3, 0);
  for (int32_t t : draw(l, p, n)) ++count[t];
  EXPECT_EQ(count[0], 0);
  EXPECT_NEAR(count[1] / (double)n, 0.625, 0.02);
  EXPECT_NEAR(count[2] / (double)n, 0.375, 0.02);

  // Low temperature sharpens toward the argmax.
  p.top_p = 1.0f;
  p.temperature = 0.25f;  // probabilities ∝ p^4: 0.0016, 0.0625, 0.0081 -> ~0.869 for id 1
  count.assign(3, 0);
  for (int32_t t : draw(l, p, n)) ++count[t];
  EXPECT_NEAR(count[1] / (double)n, 0.0625 / (0.0016 + 0.0625 + 0.0081), 0.02);
}

}  // namespace
}  // namespace tandem
