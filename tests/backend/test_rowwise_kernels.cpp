// Kernel tests for the row-wise families: embedding, rmsnorm and swiglu, forward against
// double references and backward against finite differences of those references.
#include <cmath>

#include "kernel_test_util.h"

namespace tandem::test {
namespace {

// ---- embedding ---------------------------------------------------------------------------

std::vector<double> ref_embedding(const std::vector<int32_t>& tokens,
                                  const std::vector<double>& table, int N, int C) {
  std::vector<double> out(static_cast<size_t>(N) * C);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) out[n * C + c] = table[static_cast<size_t>(tokens[n]) * C + c];
  return out;
}

struct EmbShape {
  int N, C, V;
};
const EmbShape kEmbShapes[] = {{7, 13, 5}, {1, 1, 1}, {64, 96, 50}, {9, 3, 2}};

std::vector<int32_t> emb_tokens(const EmbShape& s, uint64_t seed) {
  auto tokens = uniform_ints(s.N, seed, 0, s.V);
  tokens[0] = s.V - 1;  // both ends of the table, and repeats when N > V
  if (s.N > 1) tokens[s.N - 1] = 0;
  return tokens;
}

TEST(Embedding, ForwardCopiesRows) {
  for (const auto& s : kEmbShapes) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " C=" << s.C << " V=" << s.V);
    auto table = uniform(static_cast<size_t>(s.V) * s.C, 1);
    auto tokens = emb_tokens(s, 2);
    DeviceBuf<float> d_table(table), d_out(static_cast<size_t>(s.N) * s.C);
    DeviceBuf<int32_t> d_tok(tokens);
    d_out.fill(kGarbage);
    backend().embedding_forward(d_out.get(), d_tok.get(), d_table.get(), s.N, s.C);
    auto out = d_out.download();
    EXPECT_TRUE(close(out, ref_embedding(tokens, to_double(table), s.N, s.C), 0.0));
    backend().embedding_forward(d_out.get(), d_tok.get(), d_table.get(), s.N, s.C);
    EXPECT_TRUE(bits_equal(out, d_out.download()));
  }
}

TEST(Embedding, BackwardAddsScatterOfDout) {
  const float prefill = 0.375f;
  for (const auto& s : kEmbShapes) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " C=" << s.C << " V=" << s.V);
    auto table = uniform(static_cast<size_t>(s.V) * s.C, 3);
    auto tokens = emb_tokens(s, 4);
    auto R = uniform(static_cast<size_t>(s.N) * s.C, 5);
    auto loss = [&](const std::vector<double>& t) {
      return dot(ref_embedding(tokens, t, s.N, s.C), R);
    };
    auto want = fd_grad(loss, to_double(table), all_indices(table.size()));

    DeviceBuf<float> d_dtable(table.size()), d_dout(R);
    DeviceBuf<int32_t> d_tok(tokens);
    d_dtable.fill(prefill);
    backend().embedding_backward(d_dtable.get(), d_dout.get(), d_tok.get(), s.N, s.C);
    auto got = d_dtable.download();
    EXPECT_TRUE(close(minus(got, prefill), want, kGradTol));

    d_dtable.fill(prefill);
    backend().embedding_backward(d_dtable.get(), d_dout.get(), d_tok.get(), s.N, s.C);
    EXPECT_TRUE(bits_equal(got, d_dtable.download()));
  }
}

// ---- rmsnorm ------------------------------------------------------------------------------

std::vector<double> ref_rmsnorm(const std::vector<double>& x, const std::vector<double>& w, int N,
                                int C, double eps, std::vector<double>* rstd = nullptr) {
  std::vector<double> out(x.size());
  if (rstd) rstd->assign(N, 0.0);
  for (int n = 0; n < N; ++n) {
    double ss = 0;
    for (int c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    double r = 1.0 / std::sqrt(ss / C + eps);
    if (rstd) (*rstd)[n] = r;
    for (int c = 0; c < C; ++c) out[n * C + c] = x[n * C + c] * r * w[c];
  }
  return out;
}

struct RowShape {
  int N, C;
};

TEST(RmsNorm, ForwardMatchesReference) {
  const RowShape shapes[] = {{7, 13}, {1, 1}, {3, 256}, {5, 1000}, {2, 4099}};
  const float eps = 1e-5f;
  for (const auto& s : shapes) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " C=" << s.C);
    auto x = uniform(static_cast<size_t>(s.N) * s.C, 10, -2.f, 2.f);
    auto w = uniform(s.C, 11, 0.5f, 1.5f);
    std::vector<double> rstd_ref;
    auto want = ref_rmsnorm(to_double(x), to_double(w), s.N, s.C, eps, &rstd_ref);

    DeviceBuf<float> d_x(x), d_w(w), d_out(x.size()), d_rstd(s.N);
    d_out.fill(kGarbage);
    d_rstd.fill(kGarbage);
    backend().rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), s.N, s.C, eps);
    auto out = d_out.download();
    auto rstd = d_rstd.download();
    EXPECT_TRUE(close(out, want, kFwdTol));
    EXPECT_TRUE(close(rstd, rstd_ref, kFwdTol));

    backend().rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), s.N, s.C, eps);
    EXPECT_TRUE(bits_equal(out, d_out.download()));
    EXPECT_TRUE(bits_equal(rstd, d_rstd.download()));
  }
}

// The fused residual add + RMSNorm: against the double reference of (a + b) then rmsnorm, and
// bit for bit against the backend's own add() then rmsnorm_forward() (so a backend's fused
// kernel changes no value of the model), with the sum written over a, over b, or apart.
TEST(RmsNorm, FusedAddEqualsAddThenNorm) {
  const RowShape shapes[] = {{7, 13}, {1, 1}, {3, 256}, {64, 288}, {2, 4099}};
  const float eps = 1e-5f;
  for (const auto& s : shapes) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " C=" << s.C);
    const size_t n = static_cast<size_t>(s.N) * s.C;
    auto a = uniform(n, 14, -2.f, 2.f), b = uniform(n, 15, -1.f, 1.f);
    auto w = uniform(s.C, 16, 0.5f, 1.5f);
    std::vector<double> h(n), rstd_ref;
    for (size_t i = 0; i < n; ++i) h[i] = (double)a[i] + (double)b[i];
    auto want = ref_rmsnorm(h, to_double(w), s.N, s.C, eps, &rstd_ref);

    DeviceBuf<float> d_a(a), d_b(b), d_w(w), d_sum(n), d_out(n), d_rstd(s.N);
    backend().add(d_sum.get(), d_a.get(), d_b.get(), n);
    backend().rmsnorm_forward(d_out.get(), d_rstd.get(), d_sum.get(), d_w.get(), s.N, s.C, eps);
    const auto sum2 = d_sum.download(), out2 = d_out.download(), rstd2 = d_rstd.download();
    EXPECT_TRUE(close(out2, want, kFwdTol));
    EXPECT_TRUE(close(rstd2, rstd_ref, kFwdTol));

    for (int where = 0; where < 3; ++where) {  // sum apart, over a, over b
      SCOPED_TRACE(testing::Message() << "sum " << (where == 0 ? "apart" : where == 1 ? "= a" : "= b"));
      DeviceBuf<float> fa(a), fb(b), fsum(n), fout(n), frstd(s.N);
      fout.fill(kGarbage);
      frstd.fill(kGarbage);
      float* sum = where == 0 ? fsum.get() : where == 1 ? fa.get() : fb.get();
      backend().add_rmsnorm_forward(sum, fout.get(), frstd.get(), fa.get(), fb.get(), d_w.get(),
                                    s.N, s.C, eps);
      DeviceBuf<float>& got_sum = where == 0 ? fsum : where == 1 ? fa : fb;
      EXPECT_TRUE(bits_equal(got_sum.download(), sum2));
      EXPECT_TRUE(bits_equal(fout.download(), out2));
      EXPECT_TRUE(bits_equal(frstd.download(), rstd2));
    }
  }
}

TEST(RmsNorm, EpsEntersUnderTheRoot) {
  // A tiny row makes eps dominate: out = x / sqrt(mean(x^2) + eps) * w.
  const int N = 2, C = 8;
  const float eps = 1e-2f;
  auto x = uniform(N * C, 12, -1e-2f, 1e-2f);
  auto w = uniform(C, 13, 0.5f, 1.5f);
  auto want = ref_rmsnorm(to_double(x), to_double(w), N, C, eps);
  DeviceBuf<float> d_x(x), d_w(w), d_out(x.size()), d_rstd(N);
  backend().rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), N, C, eps);
  EXPECT_TRUE(close(d_out.download(), want, kFwdTol));
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  const RowShape shapes[] = {{7, 13}, {1, 5}, {2, 64}, {3, 130}};
  const float eps = 1e-5f, prefill = 0.5f;
  for (const auto& s : shapes) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " C=" << s.C);
    const size_t NC = static_cast<size_t>(s.N) * s.C;
    auto x = uniform(NC, 20, -2.f, 2.f);
    auto w = uniform(s.C, 21, 0.5f, 1.5f);
    auto R = uniform(NC, 22);
    auto xd = to_double(x), wd = to_double(w);
    auto want_dx = fd_grad(
        [&](const std::vector<double>& xv) { return dot(ref_rmsnorm(xv, wd, s.N, s.C, eps), R); },
        xd, all_indices(NC));
    auto want_dw = fd_grad(
        [&](const std::vector<double>& wv) { return dot(ref_rmsnorm(xd, wv, s.N, s.C, eps), R); },
        wd, all_indices(s.C));

    DeviceBuf<float> d_x(x), d_w(w), d_out(NC), d_rstd(s.N), d_dout(R), d_dx(NC), d_dw(s.C);
    backend().rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), s.N, s.C, eps);
    d_dx.fill(kGarbage);
    d_dw.fill(prefill);
    backend().rmsnorm_backward(d_dx.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(),
                               d_rstd.get(), s.N, s.C);
    auto dx = d_dx.download();
    auto dw = d_dw.download();
    EXPECT_TRUE(close(dx, want_dx, kGradTol)) << "dx (written)";
    EXPECT_TRUE(close(minus(dw, prefill), want_dw, kGradTol)) << "dw (accumulated)";

    d_dx.fill(kGarbage);
    d_dw.fill(prefill);
    backend().rmsnorm_backward(d_dx.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(),
                               d_rstd.get(), s.N, s.C);
    EXPECT_TRUE(bits_equal(dx, d_dx.download()));
    EXPECT_TRUE(bits_equal(dw, d_dw.download()));
  }
}

// ---- swiglu ---------------------------------------------------------------------------------

std::vector<double> ref_swiglu(const std::vector<double>& gateup, int N, int F) {
  std::vector<double> out(static_cast<size_t>(N) * F);
  for (int n = 0; n < N; ++n)
    for (int f = 0; f < F; ++f) {
      double g = gateup[static_cast<size_t>(n) * 2 * F + f];
      double u = gateup[static_cast<size_t>(n) * 2 * F + F + f];
      out[static_cast<size_t>(n) * F + f] = g / (1.0 + std::exp(-g)) * u;
    }
  return out;
}

const RowShape kSwigluShapes[] = {{7, 13}, {1, 1}, {4, 100}, {3, 257}};

TEST(SwiGLU, ForwardMatchesReference) {
  for (const auto& s : kSwigluShapes) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " F=" << s.C);
    auto gu = uniform(static_cast<size_t>(s.N) * 2 * s.C, 30, -5.f, 5.f);
    DeviceBuf<float> d_gu(gu), d_out(static_cast<size_t>(s.N) * s.C);
    d_out.fill(kGarbage);
    backend().swiglu_forward(d_out.get(), d_gu.get(), s.N, s.C);
    auto out = d_out.download();
    EXPECT_TRUE(close(out, ref_swiglu(to_double(gu), s.N, s.C), kFwdTol));
    backend().swiglu_forward(d_out.get(), d_gu.get(), s.N, s.C);
    EXPECT_TRUE(bits_equal(out, d_out.download()));
  }
}

TEST(SwiGLU, BackwardMatchesFiniteDifferences) {
  for (const auto& s : kSwigluShapes) {
    SCOPED_TRACE(testing::Message() << "N=" << s.N << " F=" << s.C);
    const size_t n2f = static_cast<size_t>(s.N) * 2 * s.C;
    auto gu = uniform(n2f, 31, -5.f, 5.f);
    auto R = uniform(static_cast<size_t>(s.N) * s.C, 32);
    auto want =
        fd_grad([&](const std::vector<double>& v) { return dot(ref_swiglu(v, s.N, s.C), R); },
                to_double(gu), all_indices(n2f));

    DeviceBuf<float> d_gu(gu), d_dout(R), d_dgu(n2f);
    d_dgu.fill(kGarbage);
    backend().swiglu_backward(d_dgu.get(), d_dout.get(), d_gu.get(), s.N, s.C);
    auto got = d_dgu.download();
    EXPECT_TRUE(close(got, want, kGradTol)) << "dgateup (written)";
    d_dgu.fill(kGarbage);
    backend().swiglu_backward(d_dgu.get(), d_dout.get(), d_gu.get(), s.N, s.C);
    EXPECT_TRUE(bits_equal(got, d_dgu.download()));
  }
}

}  // namespace
}  // namespace tandem::test
