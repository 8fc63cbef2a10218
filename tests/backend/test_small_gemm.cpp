// small_gemm (the CPU backend's GEMM for attention's blocks) against a double-precision
// reference, over every transpose, odd and degenerate sizes, alpha, beta 0 and 1 and leading
// dimensions wider than the matrices; it must not write outside C, and a row's bits must not
// depend on how many rows were computed with it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "tandem/backend/cpu/small_gemm.h"
#include "tandem/core/rng.h"

namespace tandem {
namespace {

std::vector<float> random(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 2.f * (float)rng_uniform(seed, 0, i) - 1.f;
  return v;
}

struct Case {
  int M, N, K;
};
const Case kCases[] = {{1, 1, 1},     {3, 5, 7},    {12, 16, 48},  {13, 33, 9}, {64, 256, 48},
                       {64, 48, 256}, {7, 65, 130}, {29, 100, 64}, {6, 64, 1},  {5, 17, 0}};

TEST(SmallGemm, MatchesADoubleReferenceAndWritesOnlyC) {
  for (const Case& c : kCases)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.f, 1.f}) {
          SCOPED_TRACE("M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) +
                       " K=" + std::to_string(c.K) + " ta=" + std::to_string(ta) +
                       " tb=" + std::to_string(tb) + " beta=" + std::to_string(beta));
          const int M = c.M, N = c.N, K = c.K;
          // Leading dimensions 3 wider than needed: the gaps must stay as they were.
          const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 3, ldc = N + 3;
          const auto A = random((size_t)(ta ? K : M) * lda + 1, 11);
          const auto B = random((size_t)(tb ? N : K) * ldb + 1, 12);
          const auto C0 = random((size_t)M * ldc, 13);
          auto C = C0;
          const float alpha = 0.75f;
          cpu::small_gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(),
                          ldc);
          for (int m = 0; m < M; ++m) {
            for (int n = 0; n < N; ++n) {
              double s = 0, mag = 0;
              for (int k = 0; k < K; ++k) {
                const double a = ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
                const double b = tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
                s += a * b;
                mag += std::fabs(a * b);
              }
              const double want = alpha * s + beta * C0[(size_t)m * ldc + n];
              const double got = C[(size_t)m * ldc + n];
              ASSERT_NEAR(got, want, 1e-6 * (alpha * mag + 1)) << "at " << m << "," << n;
            }
            for (int n = N; n < ldc; ++n)
              ASSERT_EQ(C[(size_t)m * ldc + n], C0[(size_t)m * ldc + n]) << "gap written at " << m;
          }
        }
}

TEST(SmallGemm, ARowsBitsDoNotDependOnTheRowsBesideIt) {
  const int N = 80, K = 96, M = 37;
  const auto A = random((size_t)M * K, 21), B = random((size_t)K * N, 22);
  std::vector<float> all((size_t)M * N), one(N);
  cpu::small_gemm(false, false, M, N, K, 1.f, A.data(), K, B.data(), N, 0.f, all.data(), N);
  for (int m = 0; m < M; ++m) {
    cpu::small_gemm(false, false, 1, N, K, 1.f, A.data() + (size_t)m * K, K, B.data(), N, 0.f,
                    one.data(), N);
    for (int n = 0; n < N; ++n)
      ASSERT_EQ(std::memcmp(&one[n], &all[(size_t)m * N + n], 4), 0) << "row " << m << " col " << n;
  }
}

}  // namespace
}  // namespace tandem
