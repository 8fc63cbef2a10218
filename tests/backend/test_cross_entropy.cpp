// Kernel tests for the fused softmax cross-entropy: losses against a double reference, dlogits
// against finite differences of dscale * sum(losses), masked rows, aliasing and stability.
#include <cmath>

#include "kernel_test_util.h"

namespace tandem::test {
namespace {

std::vector<double> ref_losses(const std::vector<double>& logits,
                               const std::vector<int32_t>& targets, int N, int V) {
  std::vector<double> loss(N, 0.0);
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const double* row = logits.data() + static_cast<size_t>(n) * V;
    double mx = row[0];
    for (int i = 1; i < V; ++i) mx = std::max(mx, row[i]);
    double s = 0;
    for (int i = 0; i < V; ++i) s += std::exp(row[i] - mx);
    loss[n] = mx + std::log(s) - row[targets[n]];
  }
  return loss;
}

// Finite differences of dscale * sum(losses). A logit only moves its own row's loss, so each
// difference evaluates that one row.
std::vector<double> fd_dlogits(const std::vector<float>& logits,
                               const std::vector<int32_t>& targets, int N, int V, float dscale,
                               const std::vector<size_t>& idx) {
  std::vector<double> g(logits.size(), 0.0);
  for (size_t i : idx) {
    const int n = static_cast<int>(i / V);
    std::vector<double> row(logits.begin() + static_cast<size_t>(n) * V,
                            logits.begin() + static_cast<size_t>(n + 1) * V);
    std::vector<int32_t> t = {targets[n]};
    g[i] = fd_grad([&](const std::vector<double>& r) { return dscale * ref_losses(r, t, 1, V)[0]; },
                   row, {i % V})[i % V];
  }
  return g;
}

struct CeShape {
  int N, V;
};
const CeShape kShapes[] = {{7, 13}, {1, 1}, {3, 1}, {5, 1000}, {4, 4099}};

// Targets in range, with some rows masked by negative values (-1 and the HF ignore index).
std::vector<int32_t> ce_targets(const CeShape& s, uint64_t seed) {
  auto t = uniform_ints(s.N, seed, 0, s.V);
  if (s.N > 1) t[1] = -1;
  if (s.N > 4) t[4] = -100;
  t[0] = s.V - 1;
  return t;
}

std::string label(const CeShape& s) {
  return "N=" + std::to_string(s.N) + " V=" + std::to_string(s.V);
}

TEST(CrossEntropy, LossesMatchReference) {
  for (const auto& s : kShapes) {
    SCOPED_TRACE(label(s));
    const size_t NV = static_cast<size_t>(s.N) * s.V;
    auto logits = uniform(NV, 300, -4.f, 4.f);
    auto targets = ce_targets(s, 301);
    auto want = ref_losses(to_double(logits), targets, s.N, s.V);

    DeviceBuf<float> d_logits(logits), d_losses(s.N);
    DeviceBuf<int32_t> d_t(targets);
    d_losses.fill(kGarbage);
    backend().cross_entropy(d_losses.get(), nullptr, d_logits.get(), d_t.get(), s.N, s.V, 1.f);
    auto losses = d_losses.download();
    EXPECT_TRUE(close(losses, want, kFwdTol));
    for (int n = 0; n < s.N; ++n) {
      if (targets[n] < 0) {
        EXPECT_EQ(losses[n], 0.f) << "masked row " << n;
      }
    }
    EXPECT_TRUE(bits_equal(d_logits.download(), logits)) << "logits modified with null dlogits";

    backend().cross_entropy(d_losses.get(), nullptr, d_logits.get(), d_t.get(), s.N, s.V, 1.f);
    EXPECT_TRUE(bits_equal(losses, d_losses.download()));
  }
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  for (const auto& s : kShapes) {
    for (float dscale : {1.0f, 0.25f}) {
      SCOPED_TRACE(label(s) + " dscale=" + std::to_string(dscale));
      const size_t NV = static_cast<size_t>(s.N) * s.V;
      auto logits = uniform(NV, 310, -4.f, 4.f);
      auto targets = ce_targets(s, 311);
      auto idx = sample_indices(NV, 1500, 312);
      auto want = fd_dlogits(logits, targets, s.N, s.V, dscale, idx);
      auto want_losses = ref_losses(to_double(logits), targets, s.N, s.V);

      DeviceBuf<float> d_logits(logits), d_losses(s.N), d_dlogits(NV);
      DeviceBuf<int32_t> d_t(targets);
      d_dlogits.fill(kGarbage);
      backend().cross_entropy(d_losses.get(), d_dlogits.get(), d_logits.get(), d_t.get(), s.N, s.V,
                              dscale);
      auto dl = d_dlogits.download();
      auto losses = d_losses.download();
      EXPECT_TRUE(close_at(dl, want, idx, kGradTol)) << "dlogits";
      EXPECT_TRUE(close(losses, want_losses, kFwdTol)) << "losses with dlogits";
      for (int n = 0; n < s.N; ++n) {
        if (targets[n] >= 0) continue;
        for (int i = 0; i < s.V; ++i)
          ASSERT_EQ(dl[static_cast<size_t>(n) * s.V + i], 0.f) << "masked row " << n;
      }
      // Each unmasked row of softmax - onehot sums to zero.
      for (int n = 0; n < s.N; ++n) {
        double row = 0;
        for (int i = 0; i < s.V; ++i) row += dl[static_cast<size_t>(n) * s.V + i];
        EXPECT_NEAR(row, 0.0, 1e-5) << "row " << n;
      }

      d_dlogits.fill(kGarbage);
      backend().cross_entropy(d_losses.get(), d_dlogits.get(), d_logits.get(), d_t.get(), s.N, s.V,
                              dscale);
      EXPECT_TRUE(bits_equal(dl, d_dlogits.download()));
      EXPECT_TRUE(bits_equal(losses, d_losses.download()));
    }
  }
}

TEST(CrossEntropy, GradientMayOverwriteLogits) {
  for (const auto& s : kShapes) {
    SCOPED_TRACE(label(s));
    const size_t NV = static_cast<size_t>(s.N) * s.V;
    const float dscale = 0.5f;
    auto logits = uniform(NV, 320, -4.f, 4.f);
    auto targets = ce_targets(s, 321);
    auto idx = sample_indices(NV, 1500, 322);
    auto want = fd_dlogits(logits, targets, s.N, s.V, dscale, idx);
    DeviceBuf<float> d_logits(logits), d_losses(s.N);
    DeviceBuf<int32_t> d_t(targets);
    backend().cross_entropy(d_losses.get(), d_logits.get(), d_logits.get(), d_t.get(), s.N, s.V,
                            dscale);
    EXPECT_TRUE(close_at(d_logits.download(), want, idx, kGradTol)) << "in-place dlogits";
    EXPECT_TRUE(
        close(d_losses.download(), ref_losses(to_double(logits), targets, s.N, s.V), kFwdTol))
        << "losses when dlogits aliases logits";
  }
}

TEST(CrossEntropy, StableForLargeLogits) {
  // exp(500) overflows fp32: the kernel has to subtract the row max.
  const int N = 3, V = 50;
  auto logits = uniform(N * V, 330, -4.f, 4.f);
  for (int i = 0; i < V; ++i) logits[i] += 500.f;
  for (int i = 0; i < V; ++i) logits[V + i] -= 500.f;
  logits[2 * V + 7] = 200.f;  // one dominant logit
  std::vector<int32_t> targets = {3, 9, 7};
  auto want = ref_losses(to_double(logits), targets, N, V);
  DeviceBuf<float> d_logits(logits), d_losses(N), d_dl(N * V);
  DeviceBuf<int32_t> d_t(targets);
  backend().cross_entropy(d_losses.get(), d_dl.get(), d_logits.get(), d_t.get(), N, V, 1.f);
  auto losses = d_losses.download();
  // Relative to |logits| ~ 500 the fp32 inputs only carry ~3e-5 absolute accuracy.
  for (int n = 0; n < N; ++n) EXPECT_NEAR(losses[n], want[n], 1e-4 + 1e-5 * want[n]);
  auto dl = d_dl.download();
  EXPECT_TRUE(backend().all_finite(d_dl.get(), N * V));
  for (float x : dl) ASSERT_TRUE(std::isfinite(x));
  EXPECT_NEAR(dl[2 * V + 7], 0.0, 1e-6) << "softmax of the dominant logit is ~1, minus onehot";
}

// cross_entropy_rows: entropies against a double reference, dlogits against finite
// differences of sum_n w_n * loss_n (weights of either sign), in a separate buffer and in place.
std::vector<double> ref_entropies(const std::vector<double>& logits,
                                  const std::vector<int32_t>& targets, int N, int V) {
  std::vector<double> h(N, 0.0);
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const double* row = logits.data() + static_cast<size_t>(n) * V;
    double mx = row[0];
    for (int i = 1; i < V; ++i) mx = std::max(mx, row[i]);
    double s = 0;
    for (int i = 0; i < V; ++i) s += std::exp(row[i] - mx);
    for (int i = 0; i < V; ++i) {
      const double p = std::exp(row[i] - mx) / s;
      if (p > 0) h[n] -= p * std::log(p);
    }
  }
  return h;
}

TEST(CrossEntropyRows, WeightedGradientAndEntropy) {
  for (const auto& s : kShapes) {
    for (bool in_place : {false, true}) {
      SCOPED_TRACE(label(s) + (in_place ? " in place" : ""));
      const size_t NV = static_cast<size_t>(s.N) * s.V;
      auto logits = uniform(NV, 340, -4.f, 4.f);
      auto targets = ce_targets(s, 341);
      auto weights = uniform(s.N, 342, -2.f, 2.f);
      auto idx = sample_indices(NV, 1500, 343);
      std::vector<double> want(NV, 0.0);
      for (int n = 0; n < s.N; ++n) {  // finite differences of w_n * loss_n, row by row
        std::vector<size_t> row_idx;
        for (size_t i : idx)
          if (static_cast<int>(i / s.V) == n) row_idx.push_back(i);
        auto g = fd_dlogits(logits, targets, s.N, s.V, weights[n], row_idx);
        for (size_t i : row_idx) want[i] = g[i];
      }
      DeviceBuf<float> d_logits(logits), d_losses(s.N), d_ent(s.N), d_dl(NV), d_w(weights);
      DeviceBuf<int32_t> d_t(targets);
      float* dl = in_place ? d_logits.get() : d_dl.get();
      backend().cross_entropy_rows(d_losses.get(), d_ent.get(), dl, d_logits.get(), d_t.get(),
                                   d_w.get(), s.N, s.V);
      const auto L = to_double(logits);
      EXPECT_TRUE(close(d_losses.download(), ref_losses(L, targets, s.N, s.V), kFwdTol));
      EXPECT_TRUE(close(d_ent.download(), ref_entropies(L, targets, s.N, s.V), kFwdTol))
          << "entropies";
      auto got = in_place ? d_logits.download() : d_dl.download();
      EXPECT_TRUE(close_at(got, want, idx, kGradTol)) << "weighted dlogits";
      for (int n = 0; n < s.N; ++n) {  // a masked row has no gradient at all
        if (targets[n] >= 0) continue;
        for (int v = 0; v < s.V; ++v) ASSERT_EQ(got[(size_t)n * s.V + v], 0.f);
      }
    }
  }
}

TEST(CrossEntropyRows, SameBitsAsCrossEntropyWithOneWeight) {
  // The per-row kernel with every weight equal to dscale is the plain kernel.
  const CeShape s{6, 1000};
  const size_t NV = static_cast<size_t>(s.N) * s.V;
  auto logits = uniform(NV, 350, -4.f, 4.f);
  auto targets = ce_targets(s, 351);
  std::vector<float> w(s.N, 0.125f);
  DeviceBuf<float> d_logits(logits), l1(s.N), l2(s.N), g1(NV), g2(NV), d_w(w);
  DeviceBuf<int32_t> d_t(targets);
  backend().cross_entropy(l1.get(), g1.get(), d_logits.get(), d_t.get(), s.N, s.V, 0.125f);
  backend().cross_entropy_rows(l2.get(), nullptr, g2.get(), d_logits.get(), d_t.get(), d_w.get(),
                               s.N, s.V);
  EXPECT_EQ(l1.download(), l2.download());
  EXPECT_EQ(g1.download(), g2.download());
}

}  // namespace
}  // namespace tandem::test
