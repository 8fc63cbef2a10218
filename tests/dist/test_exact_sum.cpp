// The exact gradient sum: the same bits whatever the ranks and their grouping of shards, close
// to a long-double reference, and the window retry for gradients far from the scale.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tandem/dist/exact_sum.h"

using tandem::ExactGradSum;

namespace {

constexpr int kShards = 12;
const std::vector<std::pair<size_t, size_t>> kSegs = {{0, 300}, {300, 5}, {305, 700}};

std::vector<std::vector<float>> make_shards(double scale) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.f, 1.f);
  std::uniform_int_distribution<int> e(-20, 0);
  std::vector<std::vector<float>> s(kShards, std::vector<float>(1005));
  for (auto& v : s)
    for (float& x : v) x = (float)(n(rng) * std::ldexp(scale, e(rng)));
  return s;
}

std::vector<double> max_of(const std::vector<std::vector<float>>& shards) {
  std::vector<double> m(kSegs.size(), 0.0);
  for (const auto& v : shards)
    for (size_t s = 0; s < kSegs.size(); ++s)
      for (size_t i = 0; i < kSegs[s].second; ++i)
        m[s] = std::max(m[s], (double)std::fabs(v[kSegs[s].first + i]));
  return m;
}

// The sum as `world` ranks would compute it: contiguous blocks of shards per rank, the
// ranks' accumulators then added in the order given.
std::vector<float> ranked_sum(const std::vector<std::vector<float>>& shards, int world,
                              bool reverse, std::vector<int> exps) {
  const int per = kShards / world;
  std::vector<int64_t> total;
  std::vector<double> gmax(kSegs.size(), 0.0);
  ExactGradSum last(kSegs, kShards);
  for (int k = 0; k < world; ++k) {
    const int r = reverse ? world - 1 - k : k;
    ExactGradSum e(kSegs, kShards);
    e.set_exponents(exps);
    e.begin();
    for (int s = r * per; s < (r + 1) * per; ++s) e.add(shards[s].data());
    if (total.empty()) total.assign(e.size(), 0);
    for (size_t i = 0; i < e.size(); ++i) total[i] += e.accumulator()[i];
    for (size_t s = 0; s < gmax.size(); ++s) gmax[s] = std::max(gmax[s], e.local_max()[s]);
  }
  last.set_exponents(exps);
  EXPECT_TRUE(last.accept(gmax));
  std::copy(total.begin(), total.end(), last.accumulator());
  std::vector<float> out(1005);
  last.finish(out.data(), gmax);
  return out;
}

}  // namespace

TEST(ExactGradSum, SameBitsForEveryWorldSizeAndOrder) {
  auto shards = make_shards(1e-2);
  ExactGradSum probe(kSegs, kShards);
  std::vector<int> exps;
  for (double m : max_of(shards)) exps.push_back(probe.fitted_exponent(m));
  const std::vector<float> one = ranked_sum(shards, 1, false, exps);
  for (int world : {2, 3, 4, 6, 12})
    for (bool rev : {false, true}) {
      const std::vector<float> w = ranked_sum(shards, world, rev, exps);
      ASSERT_EQ(0, std::memcmp(one.data(), w.data(), one.size() * 4)) << world << " ranks";
    }
  // Against the sum in long double: within half an ulp of float plus the rounding of each
  // of the 12 shards to the fixed-point grid.
  for (size_t s = 0; s < kSegs.size(); ++s)
    for (size_t i = kSegs[s].first; i < kSegs[s].first + kSegs[s].second; ++i) {
      long double ref = 0;
      for (const auto& v : shards) ref += v[i];
      const double grid = std::ldexp(1.0, -exps[s]) * kShards;
      const double ulp = std::nextafter(std::fabs((float)ref), INFINITY) - std::fabs((float)ref);
      ASSERT_LE(std::fabs((double)(one[i] - ref)), 0.5 * ulp + grid) << i;
    }
}

TEST(ExactGradSum, PlainFloatSumsDependOnTheOrderTheExactOneDoesNot) {
  // The reason it exists: summing the same shards in two groupings gives different floats.
  auto shards = make_shards(1.0);
  int differ = 0;
  for (size_t i = 0; i < 1005; ++i) {
    float a = 0, b0 = 0, b1 = 0;
    for (int s = 0; s < kShards; ++s) a += shards[s][i];
    for (int s = 0; s < kShards / 2; ++s) b0 += shards[s][i];
    for (int s = kShards / 2; s < kShards; ++s) b1 += shards[s][i];
    differ += a != b0 + b1;
  }
  EXPECT_GT(differ, 0);
}

TEST(ExactGradSum, GradientsOutsideTheWindowAreRefittedAndRetried) {
  for (double scale : {1e6, 1e-14}) {
    auto shards = make_shards(scale);
    ExactGradSum e(kSegs, kShards);  // fitted to a largest value of 1
    e.begin();
    for (const auto& s : shards) e.add(s.data());
    const auto m = max_of(shards);
    EXPECT_FALSE(e.accept(m)) << scale;
    e.begin();
    for (const auto& s : shards) e.add(s.data());
    EXPECT_TRUE(e.accept(m)) << scale;
    std::vector<float> out(1005);
    e.finish(out.data(), m);
    for (size_t i = 0; i < 300; ++i) {
      double ref = 0;
      for (const auto& s : shards) ref += s[i];
      ASSERT_NEAR(out[i], ref, std::fabs(ref) * 1e-6 + m[0] * 1e-9) << scale;
    }
  }
}

TEST(ExactGradSum, ANonFiniteValuePoisonsItsTensorWithoutARetry) {
  auto shards = make_shards(1e-2);
  shards[5][310] = std::numeric_limits<float>::infinity();
  ExactGradSum e(kSegs, kShards);
  e.begin();
  for (const auto& s : shards) e.add(s.data());
  EXPECT_TRUE(std::isinf(e.local_max()[2]));
  EXPECT_TRUE(e.accept(e.local_max()));
  std::vector<float> out(1005);
  e.finish(out.data(), e.local_max());
  EXPECT_TRUE(std::isnan(out[400]));
  EXPECT_TRUE(std::isfinite(out[10]));
}
