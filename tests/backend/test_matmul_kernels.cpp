// Kernel tests for matmul (out = x · Wᵀ): forward against a double reference, backward against
// finite differences, ADD into dw and WRITE of dx, determinism.
#include "kernel_test_util.h"

namespace tandem::test {
namespace {

std::vector<double> ref_matmul(const std::vector<double>& x, const std::vector<double>& w, int M,
                               int N, int K) {
  std::vector<double> out(static_cast<size_t>(M) * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k)
        s += x[static_cast<size_t>(m) * K + k] * w[static_cast<size_t>(n) * K + k];
      out[static_cast<size_t>(m) * N + n] = s;
    }
  return out;
}

struct MatShape {
  int M, N, K;
};
// Odd sizes, degenerate ones, and a few big enough to reach blocked / threaded GEMM paths.
const MatShape kShapes[] = {{7, 5, 13}, {1, 1, 1},    {1, 9, 4},     {5, 1, 7},
                            {3, 4, 1},  {33, 17, 65}, {64, 96, 128}, {130, 70, 257}};

std::string label(const MatShape& s) {
  return "M=" + std::to_string(s.M) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K);
}

TEST(Matmul, ForwardMatchesReference) {
  for (const auto& s : kShapes) {
    SCOPED_TRACE(label(s));
    auto x = uniform(static_cast<size_t>(s.M) * s.K, 100);
    auto w = uniform(static_cast<size_t>(s.N) * s.K, 101);
    DeviceBuf<float> d_x(x), d_w(w), d_out(static_cast<size_t>(s.M) * s.N);
    d_out.fill(kGarbage);
    backend().matmul_forward(d_out.get(), d_x.get(), d_w.get(), s.M, s.N, s.K);
    auto out = d_out.download();
    EXPECT_TRUE(close(out, ref_matmul(to_double(x), to_double(w), s.M, s.N, s.K), kGemmTol));
    backend().matmul_forward(d_out.get(), d_x.get(), d_w.get(), s.M, s.N, s.K);
    EXPECT_TRUE(bits_equal(out, d_out.download()));
  }
}

TEST(Matmul, BackwardMatchesFiniteDifferences) {
  const float prefill = -0.75f;
  for (const auto& s : kShapes) {
    SCOPED_TRACE(label(s));
    const size_t MK = static_cast<size_t>(s.M) * s.K, NK = static_cast<size_t>(s.N) * s.K;
    auto x = uniform(MK, 110);
    auto w = uniform(NK, 111);
    auto R = uniform(static_cast<size_t>(s.M) * s.N, 112);
    auto xd = to_double(x), wd = to_double(w);
    // Sample the gradient entries on the big shapes to keep the double reference cheap.
    const size_t flops = static_cast<size_t>(s.M) * s.N * s.K;
    const size_t k = std::clamp<size_t>(100'000'000 / flops, 40, 300);
    auto ix = sample_indices(MK, k, 113), iw = sample_indices(NK, k, 114);
    auto want_dx = fd_grad(
        [&](const std::vector<double>& v) { return dot(ref_matmul(v, wd, s.M, s.N, s.K), R); }, xd,
        ix);
    auto want_dw = fd_grad(
        [&](const std::vector<double>& v) { return dot(ref_matmul(xd, v, s.M, s.N, s.K), R); }, wd,
        iw);

    DeviceBuf<float> d_x(x), d_w(w), d_dout(R), d_dx(MK), d_dw(NK);
    d_dx.fill(kGarbage);
    d_dw.fill(prefill);
    backend().matmul_backward(d_dx.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(), s.M, s.N,
                              s.K);
    auto dx = d_dx.download();
    auto dw = d_dw.download();
    EXPECT_TRUE(close_at(dx, want_dx, ix, kGradTol)) << "dx (written)";
    EXPECT_TRUE(close_at(minus(dw, prefill), want_dw, iw, kGradTol)) << "dw (accumulated)";

    d_dx.fill(kGarbage);
    d_dw.fill(prefill);
    backend().matmul_backward(d_dx.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(), s.M, s.N,
                              s.K);
    EXPECT_TRUE(bits_equal(dx, d_dx.download()));
    EXPECT_TRUE(bits_equal(dw, d_dw.download()));
  }
}

TEST(Matmul, BackwardAccumulatesAcrossMicroBatches) {
  // Two half batches into the same dw equal one full batch (up to fp32 rounding).
  const int M = 10, N = 6, K = 9;
  auto x = uniform(M * K, 120);
  auto w = uniform(N * K, 121);
  auto R = uniform(M * N, 122);
  auto want = fd_grad(
      [&](const std::vector<double>& v) { return dot(ref_matmul(to_double(x), v, M, N, K), R); },
      to_double(w), all_indices(N * K));
  std::vector<float> x1(x.begin(), x.begin() + M / 2 * K), x2(x.begin() + M / 2 * K, x.end());
  std::vector<float> r1(R.begin(), R.begin() + M / 2 * N), r2(R.begin() + M / 2 * N, R.end());
  DeviceBuf<float> d_w(w), d_dw(N * K), d_dx(M / 2 * K);
  DeviceBuf<float> d_x1(x1), d_x2(x2), d_r1(r1), d_r2(r2);
  backend().matmul_backward(d_dx.get(), d_dw.get(), d_r1.get(), d_x1.get(), d_w.get(), M / 2, N, K);
  backend().matmul_backward(d_dx.get(), d_dw.get(), d_r2.get(), d_x2.get(), d_w.get(), M / 2, N, K);
  EXPECT_TRUE(close(d_dw.download(), want, kGradTol));
}

}  // namespace
}  // namespace tandem::test
