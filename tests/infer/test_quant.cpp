// Quantization formats: half-precision conversion against the hardware's F16C instructions;
// q8_0 / q4_0 block rules (range, extreme value exact, error within half a step).
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "tandem/core/error.h"
#include "tandem/core/half.h"
#include "tandem/infer/quant.h"

namespace tandem {
namespace {

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

#if defined(__F16C__)
TEST(Half, MatchesF16cOnEveryClassOfValue) {
  std::mt19937 gen(7);
  std::vector<float> vals = {0.f, -0.f, 1.f, -2.5f, 65504.f, 65519.f, 65520.f, 1e9f, 6.1e-5f,
                             5.96e-8f, 2.98e-8f, 2.99e-8f, 1e-10f, INFINITY, -INFINITY};
  for (int i = 0; i < 200000; ++i) vals.push_back(bits_to_float(gen()));
  for (float f : vals) {
    if (std::isnan(f)) continue;
    const uint16_t want = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
    ASSERT_EQ(float_to_half(f), want) << f;
    ASSERT_EQ(half_to_float(want), _cvtsh_ss(want)) << want;
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = half_to_float((uint16_t)h), b = _cvtsh_ss((uint16_t)h);
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a));
      continue;
    }
    ASSERT_EQ(std::memcmp(&a, &b, 4), 0) << h;
  }
}
#endif

TEST(Half, RoundTripsRepresentableValues) {
  for (uint32_t h = 0; h < 0x7C00; ++h) EXPECT_EQ(float_to_half(half_to_float((uint16_t)h)), h);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(NAN))));
}

std::vector<float> weights(int n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, 0.05f);
  std::vector<float> w(n);
  for (auto& x : w) x = d(gen);
  return w;
}

TEST(Quant, Q8BlocksRoundToTheNearestStep) {
  const int N = 5, K = 96;
  auto w = weights(N * K, 1);
  w[3] = 0.f;  // zero blocks stay zero
  for (int j = 32; j < 64; ++j) w[j] = 0.f;
  QuantMatrix q = quantize_matrix(w.data(), N, K, WType::Q8);
  ASSERT_EQ(q.data.size(), (size_t)N * K);
  ASSERT_EQ(q.scale.size(), (size_t)N * K / 32);
  auto d = dequantize_matrix(q);
  for (int i = 0; i < N * K; ++i) {
    const float s = q.scale[i / 32];
    EXPECT_EQ(s, half_to_float(float_to_half(s)));  // fp16-exact, as GGUF stores it
    const int8_t v = reinterpret_cast<const int8_t*>(q.data.data())[i];
    EXPECT_GE(v, -127);
    // Half a step, plus the scale's fp16 rounding (2^-11 relative) times up to 127 steps.
    EXPECT_LE(std::fabs(d[i] - w[i]), s * (0.5f + 127.f / 2048.f) + 1e-7f) << i;
  }
  EXPECT_EQ(q.scale[1], 0.f);
  EXPECT_EQ(d[40], 0.f);
}

TEST(Quant, Q4BlocksKeepTheExtremeValueAndStayWithinHalfAStep) {
  const int N = 4, K = 64;
  auto w = weights(N * K, 2);
  QuantMatrix q = quantize_matrix(w.data(), N, K, WType::Q4);
  ASSERT_EQ(q.data.size(), (size_t)N * K / 2);
  auto d = dequantize_matrix(q);
  for (int b = 0; b < N * K / 32; ++b) {
    int arg = b * 32;
    for (int j = b * 32; j < b * 32 + 32; ++j)
      if (std::fabs(w[j]) > std::fabs(w[arg])) arg = j;
    const float s = std::fabs(q.scale[b]);
    // The extreme value maps to -8 steps exactly (up to the scale's fp16 rounding).
    EXPECT_NEAR(d[arg], w[arg], std::fabs(w[arg]) * 1e-3f) << "block " << b;
    // Half a step plus the scale's fp16 rounding over up to 8 steps; values of the other sign
    // beyond 7.5 steps clamp to 7 (q4_0's range is -8..7), up to one step off.
    for (int j = b * 32; j < b * 32 + 32; ++j) {
      const float steps = w[j] / (w[arg] / -8.f);
      const float bound = (steps > 7.5f ? 1.f : 0.5f) * s + 8.f * s / 2048.f + 1e-7f;
      EXPECT_LE(std::fabs(d[j] - w[j]), bound) << j;
    }
  }
}

TEST(Quant, NamesAndErrors) {
  EXPECT_EQ(parse_quant("none"), WType::F32);
  EXPECT_EQ(parse_quant("int8"), WType::Q8);
  EXPECT_EQ(parse_quant("q4"), WType::Q4);
  try {
    parse_quant("q3");
    ADD_FAILURE() << "q3 must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'q3'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem
