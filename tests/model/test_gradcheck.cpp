// The whole model's backward against central differences of its own loss, and determinism:
// the same seed, inputs and thread count must give bit-identical logits and gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "model_test_util.h"

namespace tandem::test {
namespace {

struct CentralDiff {
  double fd;         // (L(p+) - L(p-)) / 2 eps
  double predicted;  // grad . (p+ - p-) / 2 eps, with p+ and p- as actually rounded to fp32
};

// Central difference of the mean loss along direction `dir` (sparse, host indices into
// layout()), against the backward's gradient along the same step.
CentralDiff central_diff(Llama& m, const Batch& b, const std::vector<float>& p0,
                         const std::vector<float>& grads,
                         const std::vector<std::pair<size_t, float>>& dir, float eps) {
  std::vector<float> up = p0, down = p0;
  for (auto [i, d] : dir) {
    up[i] = p0[i] + eps * d;
    down[i] = p0[i] - eps * d;
  }
  m.load_params(up.data());
  const double lu = eval_loss(m, b);
  m.load_params(down.data());
  const double ld = eval_loss(m, b);
  m.load_params(p0.data());
  double pred = 0.0;
  for (auto [i, d] : dir) pred += (double)grads[i] * ((double)up[i] - (double)down[i]);
  return {(lu - ld) / (2.0 * eps), pred / (2.0 * eps)};
}

class GradCheck : public ::testing::TestWithParam<ModelCase> {};

// One element of every parameter tensor, picked at random (the largest |grad| of a few random
// candidates, so the check is not swamped by fp32 noise on a near-zero gradient).
TEST_P(GradCheck, SingleParametersMatchFiniteDifferences) {
  const ModelConfig& c = GetParam().cfg;
  auto be = make_backend("cpu", 2);
  Llama m(c, *be);
  init_test_weights(m, 7);
  const Batch b = make_batch(c, 8);
  const StepResult r = run_step(m, b);
  std::vector<float> p0(m.num_params());
  m.save_params(p0.data());

  std::mt19937_64 gen(42);
  int checked = 0;
  for (const auto& t : m.layout().tensors) {
    std::uniform_int_distribution<size_t> pick(0, t.numel - 1);
    size_t best = t.offset + pick(gen);
    for (int k = 0; k < 8; ++k) {
      size_t i = t.offset + pick(gen);
      if (std::fabs(r.grads[i]) > std::fabs(r.grads[best])) best = i;
    }
    const float eps = 1e-2f * std::max(1.0f, std::fabs(p0[best]));
    const CentralDiff cd = central_diff(m, b, p0, r.grads, {{best, 1.0f}}, eps);
    const double fd = cd.fd, g = cd.predicted;
    const double err = std::fabs(fd - g) / std::max(std::fabs(g), 1e-3);
    std::printf("  %-48s [%6zu] grad % .6e  fd % .6e  rel %.2e\n", t.name.c_str(), best - t.offset,
                g, fd, err);
    EXPECT_LE(err, 1e-2) << t.name << " element " << best - t.offset;
    ++checked;
  }
  EXPECT_EQ(checked, (int)m.layout().tensors.size());
}

// The full gradient projected on a random direction: every parameter contributes, so a wrong
// gradient anywhere (not just at the sampled elements) moves the result.
TEST_P(GradCheck, RandomDirectionMatchesFiniteDifference) {
  const ModelConfig& c = GetParam().cfg;
  auto be = make_backend("cpu", 2);
  Llama m(c, *be);
  init_test_weights(m, 17);
  const Batch b = make_batch(c, 18);
  const StepResult r = run_step(m, b);
  std::vector<float> p0(m.num_params());
  m.save_params(p0.data());

  // Each element moves by 0.1% of its tensor's RMS, so norms and matrices are perturbed in
  // proportion; the summed step moves the loss well above fp32 noise, and is small enough that
  // the third-order term stays below the tolerance (1% of RMS gave 3% error on the tied model).
  std::mt19937_64 gen(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::pair<size_t, float>> dir;
  for (const auto& t : m.layout().tensors) {
    double ss = 0.0;
    for (size_t i = 0; i < t.numel; ++i) ss += (double)p0[t.offset + i] * p0[t.offset + i];
    const float rms = (float)std::sqrt(ss / t.numel);
    for (size_t i = 0; i < t.numel; ++i) dir.push_back({t.offset + i, rms * normal(gen)});
  }
  const CentralDiff cd = central_diff(m, b, p0, r.grads, dir, 1e-3f);
  std::printf("  directional derivative: grad.d % .6e  fd % .6e  rel %.2e\n", cd.predicted, cd.fd,
              std::fabs(cd.fd - cd.predicted) / std::fabs(cd.predicted));
  EXPECT_NEAR(cd.fd, cd.predicted, 1e-2 * std::fabs(cd.predicted));
}

INSTANTIATE_TEST_SUITE_P(Model, GradCheck,
                         ::testing::Values(model_cases()[0], model_cases()[1], model_cases()[3]),
                         [](const auto& info) { return info.param.name; });

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Two models built from the same seed on separate backends, and a second step on the first
// model, all give the same bits.
TEST(Determinism, SameSeedSameBits) {
  const ModelConfig c = model_cases()[0].cfg;
  auto be1 = make_backend("cpu", 2);
  auto be2 = make_backend("cpu", 2);
  Llama m1(c, *be1), m2(c, *be2);
  init_test_weights(m1, 3);
  init_test_weights(m2, 3);
  const Batch b = make_batch(c, 4);
  const StepResult r1 = run_step(m1, b);
  const StepResult r2 = run_step(m2, b);
  const StepResult r1again = run_step(m1, b);
  EXPECT_TRUE(same_bits(r1.logits, r2.logits));
  EXPECT_TRUE(same_bits(r1.grads, r2.grads));
  EXPECT_EQ(std::memcmp(&r1.loss, &r2.loss, sizeof(double)), 0);
  EXPECT_TRUE(same_bits(r1.grads, r1again.grads)) << "a repeated step changed the gradients";
  EXPECT_TRUE(same_bits(r1.logits, r1again.logits));

  // And a different seed really changes them, so the comparison above can fail.
  Llama m3(c, *be2);
  init_test_weights(m3, 4);
  EXPECT_FALSE(same_bits(r1.grads, run_step(m3, b).grads));
}


// Fine-tuning rows: a masked position adds exactly nothing. Its target does not enter the loss
// and its logits' gradient is zero, so padding after an example (masked targets, any input
// tokens: causal attention keeps later positions out of earlier ones) leaves every gradient
// bit as it was, and a prompt position's would-be target cannot matter either.
TEST_P(GradCheck, MaskedPositionsContributeExactlyZeroGradient) {
  const ModelConfig& cfg = GetParam().cfg;
  auto be = make_backend("cpu", 2);
  Llama m(cfg, *be);
  init_test_weights(m, 11);
  test::Batch b = test::make_batch(cfg, 5, 2, 16);
  const int T = b.T;
  // Row 0: positions 0-3 a masked prompt, 4-9 taught, 10-15 padding. Row 1 stays as made.
  for (int t = 0; t < 4; ++t) b.targets[t] = -1;
  for (int t = 10; t < T; ++t) b.targets[t] = -1;
  b.num_valid = 0;
  for (int32_t t : b.targets) b.num_valid += t >= 0;
  m.reserve(b.B, b.T);
  const auto base = test::run_step(m, b);
  test::Batch other = b;
  for (int t = 10; t < T; ++t) other.tokens[t] = (other.tokens[t] + 7 + t) % cfg.vocab_size;
  const auto padded = test::run_step(m, other);
  EXPECT_EQ(std::memcmp(base.grads.data(), padded.grads.data(), base.grads.size() * 4), 0);
  EXPECT_EQ(base.loss, padded.loss);
  // The gradient of the logits at every masked position is exactly zero.
  m.zero_grads();
  m.forward(b.tokens.data(), b.B, b.T);
  m.loss(b.targets.data(), 1.0f / (float)b.num_valid, true);
  std::vector<float> dl((size_t)b.B * T * cfg.vocab_size);
  m.backend().to_host(dl.data(), m.logits(), dl.size() * sizeof(float));
  for (int p = 0; p < b.B * T; ++p) {
    if (b.targets[p] >= 0) continue;
    for (int v = 0; v < cfg.vocab_size; ++v)
      ASSERT_EQ(dl[(size_t)p * cfg.vocab_size + v], 0.0f) << "position " << p;
  }
}

}  // namespace
}  // namespace tandem::test
