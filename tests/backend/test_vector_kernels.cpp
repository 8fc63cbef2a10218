// Kernel tests for the flat-vector kernels: add, scale, sum_squares, all_finite and adamw.
#include <cfloat>
#include <cmath>
#include <limits>

#include "kernel_test_util.h"

namespace tandem::test {
namespace {

const size_t kSizes[] = {1, 7, 13, 1000, 4099};

// ---- add --------------------------------------------------------------------------------------

TEST(Add, MatchesFloatSumIncludingAliases) {
  for (size_t n : kSizes) {
    SCOPED_TRACE(testing::Message() << "n=" << n);
    auto a = uniform(n, 200), b = uniform(n, 201);
    // One fp32 add per element is exactly rounded, so the result is known to the bit.
    std::vector<float> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = a[i] + b[i];

    DeviceBuf<float> d_a(a), d_b(b), d_out(n);
    d_out.fill(kGarbage);
    backend().add(d_out.get(), d_a.get(), d_b.get(), n);
    EXPECT_TRUE(bits_equal(d_out.download(), want)) << "separate output";
    EXPECT_TRUE(bits_equal(d_a.download(), a)) << "input a modified";
    EXPECT_TRUE(bits_equal(d_b.download(), b)) << "input b modified";

    backend().add(d_a.get(), d_a.get(), d_b.get(), n);
    EXPECT_TRUE(bits_equal(d_a.download(), want)) << "out aliases a";
    d_a.upload(a);
    backend().add(d_b.get(), d_a.get(), d_b.get(), n);
    EXPECT_TRUE(bits_equal(d_b.download(), want)) << "out aliases b";
  }
}

// ---- scale ------------------------------------------------------------------------------------

TEST(Scale, MultipliesInPlace) {
  for (size_t n : kSizes) {
    for (float s : {0.37f, -2.5f, 0.0f}) {
      SCOPED_TRACE(testing::Message() << "n=" << n << " s=" << s);
      auto x = uniform(n, 210);
      std::vector<float> want(n);
      for (size_t i = 0; i < n; ++i) want[i] = x[i] * s;  // exactly rounded
      DeviceBuf<float> d_x(x);
      backend().scale(d_x.get(), n, s);
      EXPECT_TRUE(bits_equal(d_x.download(), want));
    }
  }
}

// ---- sum_squares ------------------------------------------------------------------------------

TEST(SumSquares, MatchesDoubleReference) {
  for (size_t n : {size_t{1}, size_t{13}, size_t{4099}, size_t{100003}}) {
    SCOPED_TRACE(testing::Message() << "n=" << n);
    auto x = uniform(n, 220, -3.f, 3.f);
    for (size_t i = 0; i < n; i += 17) x[i] *= 1e-3f;  // mixed magnitudes
    double want = 0;
    for (float v : x) want += static_cast<double>(v) * v;
    DeviceBuf<float> d_x(x);
    double got = backend().sum_squares(d_x.get(), n);
    // Accumulating in double leaves only fp32 rounding of single products (< 6e-8 each);
    // an fp32 running sum over 1e5 values would miss by far more.
    EXPECT_NEAR(got, want, 1e-7 * want);
    double again = backend().sum_squares(d_x.get(), n);
    EXPECT_EQ(std::memcmp(&got, &again, sizeof got), 0) << "not deterministic";
  }
}

TEST(SumSquares, EmptyIsZero) {
  DeviceBuf<float> d_x(size_t{4});
  d_x.fill(kGarbage);
  EXPECT_EQ(backend().sum_squares(d_x.get(), 0), 0.0);
}

TEST(SumSquares, LargeValuesDoNotOverflow) {
  // 1e20^2 overflows fp32 but not double: the sum is taken in double.
  std::vector<float> x(5, 1e20f);
  DeviceBuf<float> d_x(x);
  double want = 5.0 * static_cast<double>(1e20f) * static_cast<double>(1e20f);
  EXPECT_NEAR(backend().sum_squares(d_x.get(), 5), want, 1e-7 * want);
}

// ---- all_finite -------------------------------------------------------------------------------

TEST(AllFinite, DetectsNaNAndInfAnywhere) {
  const float bad[] = {
      std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
      std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
  for (size_t n : kSizes) {
    auto x = uniform(n, 230, -1e30f, 1e30f);
    x[0] = FLT_MAX;  // extremes that are still finite
    if (n > 1) x[1] = -FLT_MAX;
    if (n > 2) x[2] = FLT_MIN / 4;  // denormal
    if (n > 3) x[3] = -0.0f;
    DeviceBuf<float> d_x(x);
    EXPECT_TRUE(backend().all_finite(d_x.get(), n)) << "n=" << n << " all finite";
    for (float b : bad) {
      for (size_t pos : {size_t{0}, n / 2, n - 1}) {
        auto y = x;
        y[pos] = b;
        d_x.upload(y);
        EXPECT_FALSE(backend().all_finite(d_x.get(), n))
            << "n=" << n << " value " << b << " at " << pos;
      }
    }
  }
}

TEST(AllFinite, LooksOnlyAtTheFirstNValues) {
  std::vector<float> x = {1.f, 2.f, 3.f, std::numeric_limits<float>::quiet_NaN()};
  DeviceBuf<float> d_x(x);
  EXPECT_TRUE(backend().all_finite(d_x.get(), 3));
  EXPECT_FALSE(backend().all_finite(d_x.get(), 4));
  EXPECT_TRUE(backend().all_finite(d_x.get(), 0));
}

// ---- adamw ------------------------------------------------------------------------------------

struct AdamState {
  std::vector<double> p, m, v;
};

AdamState ref_adamw(const std::vector<float>& p, const std::vector<float>& m,
                    const std::vector<float>& v, const std::vector<float>& g, double lr, double b1,
                    double b2, double eps, double wd, int64_t t) {
  AdamState s{to_double(p), to_double(m), to_double(v)};
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(t));
  for (size_t i = 0; i < p.size(); ++i) {
    double gi = g[i];
    s.m[i] = b1 * s.m[i] + (1 - b1) * gi;
    s.v[i] = b2 * s.v[i] + (1 - b2) * gi * gi;
    double mhat = s.m[i] / bc1, vhat = s.v[i] / bc2;
    s.p[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * s.p[i]);
  }
  return s;
}

// Gradients spread over seven decades so that eps matters for some entries.
std::vector<float> adam_grads(size_t n, uint64_t seed) {
  auto g = uniform(n, seed);
  for (size_t i = 0; i < n; ++i) g[i] *= std::pow(10.0f, -static_cast<float>(i % 7));
  return g;
}

struct AdamCase {
  float lr, b1, b2, eps, wd;
};

TEST(AdamW, MatchesReferenceOverSeveralSteps) {
  const AdamCase cases[] = {{1e-2f, 0.9f, 0.95f, 1e-6f, 0.1f},
                            {3e-3f, 0.9f, 0.999f, 1e-8f, 0.0f},
                            {1e-1f, 0.8f, 0.99f, 1e-4f, 0.5f}};
  for (const auto& c : cases) {
    for (size_t n : {size_t{1}, size_t{13}, size_t{4099}}) {
      SCOPED_TRACE(testing::Message() << "n=" << n << " lr=" << c.lr << " b2=" << c.b2
                                      << " eps=" << c.eps << " wd=" << c.wd);
      auto p = uniform(n, 240, -2.f, 2.f);
      std::vector<float> m(n, 0.f), v(n, 0.f);
      DeviceBuf<float> d_p(p), d_m(m), d_v(v), d_g(n);
      for (int64_t t = 1; t <= 4; ++t) {
        SCOPED_TRACE(testing::Message() << "t=" << t);
        auto g = adam_grads(n, 250 + t);
        // Each step is compared from the backend's own state, so errors do not compound.
        auto want = ref_adamw(p, m, v, g, c.lr, c.b1, c.b2, c.eps, c.wd, t);
        d_g.upload(g);
        backend().adamw(d_p.get(), d_m.get(), d_v.get(), d_g.get(), n, c.lr, c.b1, c.b2, c.eps,
                        c.wd, t);
        auto np = d_p.download(), nm = d_m.download(), nv = d_v.download();
        EXPECT_TRUE(close(nm, want.m, kFwdTol)) << "m";
        EXPECT_TRUE(close(nv, want.v, kFwdTol)) << "v";
        EXPECT_TRUE(close(np, want.p, kFwdTol)) << "p";
        // The update itself (p_new - p_old) is small next to p; check it on its own.
        std::vector<float> delta(n);
        std::vector<double> want_delta(n);
        for (size_t i = 0; i < n; ++i) {
          delta[i] = static_cast<float>(static_cast<double>(np[i]) - p[i]);
          want_delta[i] = want.p[i] - p[i];
        }
        EXPECT_TRUE(close(delta, want_delta, 1e-4)) << "p update";
        p = np;
        m = nm;
        v = nv;
      }
    }
  }
}

TEST(AdamW, LateStepAndDeterminism) {
  // At a late step the bias corrections are ~1; start from nonzero moments.
  const size_t n = 1031;
  const int64_t t = 1000;
  auto p = uniform(n, 260, -1.f, 1.f), m = uniform(n, 261, -0.1f, 0.1f);
  auto v = uniform(n, 262, 0.f, 0.01f);
  auto g = adam_grads(n, 263);
  auto want = ref_adamw(p, m, v, g, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
  std::vector<float> results[2][3];
  for (auto& r : results) {
    DeviceBuf<float> d_p(p), d_m(m), d_v(v), d_g(g);
    backend().adamw(d_p.get(), d_m.get(), d_v.get(), d_g.get(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f,
                    t);
    r[0] = d_p.download();
    r[1] = d_m.download();
    r[2] = d_v.download();
  }
  EXPECT_TRUE(close(results[0][0], want.p, kFwdTol));
  EXPECT_TRUE(close(results[0][1], want.m, kFwdTol));
  EXPECT_TRUE(close(results[0][2], want.v, kFwdTol));
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(bits_equal(results[0][k], results[1][k]));
}

TEST(AdamW, ZeroLearningRateLeavesParameters) {
  const size_t n = 37;
  auto p = uniform(n, 270), g = uniform(n, 271);
  DeviceBuf<float> d_p(p), d_m(n), d_v(n), d_g(g);
  backend().adamw(d_p.get(), d_m.get(), d_v.get(), d_g.get(), n, 0.f, 0.9f, 0.95f, 1e-8f, 0.1f, 1);
  EXPECT_TRUE(bits_equal(d_p.download(), p));
  auto want = ref_adamw(p, std::vector<float>(n, 0.f), std::vector<float>(n, 0.f), g, 0.0, 0.9f,
                        0.95f, 1e-8f, 0.1f, 1);
  EXPECT_TRUE(close(d_m.download(), want.m, kFwdTol));
  EXPECT_TRUE(close(d_v.download(), want.v, kFwdTol));
}

}  // namespace
}  // namespace tandem::test
