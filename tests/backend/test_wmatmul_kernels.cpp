// wmatmul_forward against a double-precision reference: fp32 weights directly; int8 and 4-bit
// weights against the dequantized matrix times the int8-quantized activations (the kernel's
// stated arithmetic), and against plain fp32 within the quantization error. Also: a row's
// result is bit-identical whatever else is in the batch, and across thread counts.
#include <cmath>
#include <cstdio>

#include "kernel_test_util.h"
#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/cpu_features.h"
#include "tandem/core/error.h"
#include "tandem/infer/quant.h"

namespace tandem::test {
namespace {

struct WCase {
  int M, N, K;
};

// The activations as the kernel quantizes them: blocks of 32, d = max|x| / 127.
std::vector<double> quantized_x(const std::vector<float>& x, int M, int K) {
  std::vector<double> out(x.size());
  for (int m = 0; m < M; ++m)
    for (int b = 0; b < K / kQBlock; ++b) {
      const float* xb = x.data() + (size_t)m * K + b * kQBlock;
      float amax = 0;
      for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
      const float d = amax / 127.f, inv = d > 0 ? 1.f / d : 0.f;
      for (int j = 0; j < kQBlock; ++j)
        out[(size_t)m * K + b * kQBlock + j] = (double)d * std::nearbyint(xb[j] * inv);
    }
  return out;
}

std::vector<double> ref_matmul(const std::vector<double>& x, const std::vector<double>& w, int M,
                               int N, int K) {
  std::vector<double> out((size_t)M * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += x[(size_t)m * K + k] * w[(size_t)n * K + k];
      out[(size_t)m * N + n] = s;
    }
  return out;
}

// Runs the kernel on host data and returns out (M, N).
struct Weights {
  WType type;
  QuantMatrix q;
  std::vector<float> f;
  std::unique_ptr<DeviceBuf<uint8_t>> data;
  std::unique_ptr<DeviceBuf<float>> scale;
  WMatrix w;
  Weights(const std::vector<float>& host, int N, int K, WType t) : type(t) {
    w.type = t;
    w.N = N;
    w.K = K;
    if (t == WType::F32) {
      f = pack_f32(host.data(), N, K);
      std::vector<uint8_t> bytes(f.size() * 4);
      std::memcpy(bytes.data(), f.data(), bytes.size());
      data = std::make_unique<DeviceBuf<uint8_t>>(bytes);
    } else {
      q = quantize_matrix(host.data(), N, K, t);
      const PackedQuant p = pack_quant(q);
      data = std::make_unique<DeviceBuf<uint8_t>>(p.data);
      scale = std::make_unique<DeviceBuf<float>>(p.scale);
      w.scale = scale->get();
    }
    w.data = data->get();
  }
};

std::vector<float> run(const Weights& W, const std::vector<float>& x, int M) {
  DeviceBuf<float> dx(x), out((size_t)M * W.w.N);
  DeviceBuf<uint8_t> scratch(wmatmul_scratch_bytes(M, W.w.K));
  backend().wmatmul_forward(out.get(), dx.get(), W.w, M, scratch.get());
  return out.download();
}

// Rows that are not whole blocks cannot be quantized: one error that says so.
void expect_block_error(int N, int K) {
  std::vector<float> w((size_t)N * K, 0.5f);
  for (WType t : {WType::Q8, WType::Q4}) {
    try {
      quantize_matrix(w.data(), N, K, t);
      ADD_FAILURE() << "quantizing rows of " << K << " values must fail";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("divisible by 32"), std::string::npos) << e.what();
    }
  }
}

class WMatmul : public ::testing::TestWithParam<WCase> {};

TEST_P(WMatmul, F32MatchesDoubleReference) {
  auto [M, N, K] = GetParam();
  auto x = uniform((size_t)M * K, 1), w = uniform((size_t)N * K, 2);
  Weights W(w, N, K, WType::F32);
  EXPECT_TRUE(close(run(W, x, M), ref_matmul(to_double(x), to_double(w), M, N, K), 1e-6));
}

TEST_P(WMatmul, QuantizedMatchesItsArithmeticAndApproximatesF32) {
  auto [M, N, K] = GetParam();
  if (K % kQBlock) return expect_block_error(N, K);
  auto x = uniform((size_t)M * K, 3), w = uniform((size_t)N * K, 4, -0.1f, 0.1f);
  const auto exact = ref_matmul(to_double(x), to_double(w), M, N, K);
  for (WType t : {WType::Q8, WType::Q4}) {
    Weights W(w, N, K, t);
    const auto got = run(W, x, M);
    auto wd = dequantize_matrix(W.q);
    EXPECT_TRUE(close(got, ref_matmul(quantized_x(x, M, K), to_double(wd), M, N, K), 1e-6))
        << quant_name(t);
    // Quantization noise: about 1% for int8 (both sides), 5-15% for 4-bit weights (more on
    // the smallest shapes, where a few outputs decide the norm).
    EXPECT_TRUE(close(got, exact, t == WType::Q8 ? 0.03 : 0.3)) << quant_name(t);
  }
}

TEST_P(WMatmul, RowsAreBitIdenticalWhateverTheBatch) {
  auto [M, N, K] = GetParam();
  if (K % kQBlock) return expect_block_error(N, K);
  auto x = uniform((size_t)M * K, 5), w = uniform((size_t)N * K, 6);
  for (WType t : {WType::F32, WType::Q8, WType::Q4}) {
    Weights W(w, N, K, t);
    const auto all = run(W, x, M);
    for (int m = 0; m < M; m += std::max(1, M / 3)) {
      std::vector<float> row(x.begin() + (size_t)m * K, x.begin() + (size_t)(m + 1) * K);
      const auto one = run(W, row, 1);
      const std::vector<float> part(all.begin() + (size_t)m * N, all.begin() + (size_t)(m + 1) * N);
      EXPECT_TRUE(bits_equal(one, part)) << quant_name(t) << " row " << m;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, WMatmul,
                         ::testing::Values(WCase{1, 1, 32}, WCase{1, 7, 64}, WCase{3, 5, 96},
                                           WCase{5, 9, 288}, WCase{17, 33, 128},
                                           WCase{16, 384, 128}, WCase{2, 13, 40},
                                           WCase{9, 10, 17}, WCase{29, 100, 64},
                                           WCase{40, 48, 32}),
                         [](const auto& info) {
                           const WCase& c = info.param;
                           char buf[64];
                           std::snprintf(buf, sizeof buf, "M%d_N%d_K%d", c.M, c.N, c.K);
                           return std::string(buf);
                         });

TEST(WMatmulThreads, SameBitsWithOneOrTwoThreads) {
  const int M = 6, N = 70, K = 256;
  auto x = uniform((size_t)M * K, 7), w = uniform((size_t)N * K, 8);
  auto one = make_backend("cpu", 1), two = make_backend("cpu", 2);
  for (WType t : {WType::F32, WType::Q8, WType::Q4}) {
    PackedQuant q;
    const std::vector<float> packed = pack_f32(w.data(), N, K);
    WMatrix wm{t, N, K, packed.data(), nullptr};
    if (t != WType::F32) {
      q = pack_quant(quantize_matrix(w.data(), N, K, t));
      wm.data = q.data.data();
      wm.scale = q.scale.data();
    }
    std::vector<uint8_t> scratch(wmatmul_scratch_bytes(M, K));
    std::vector<float> a((size_t)M * N), b((size_t)M * N);
    one->wmatmul_forward(a.data(), x.data(), wm, M, scratch.data());
    two->wmatmul_forward(b.data(), x.data(), wm, M, scratch.data());
    EXPECT_TRUE(bits_equal(a, b)) << quant_name(t);
  }
}

// The portable, AVX2 and AVX-512 VNNI variants of the quantized kernel compute one definition
// of the arithmetic: every variant this CPU runs gives the portable variant's bits, on shapes
// with odd block counts (padding), every tile remainder (rows and panels), prefill-sized row
// counts, and 1 or 2 threads.
TEST(WMatmulVariants, EverySupportedVariantGivesThePortableBits) {
  const WCase cases[] = {{1, 1, 32},   {3, 5, 96},    {5, 9, 288},   {6, 70, 256},
                         {17, 33, 128}, {16, 16, 64}, {32, 48, 160}, {50, 70, 256},
                         {83, 40, 96}};
  int checked = 0;
  for (const WCase& c : cases) {
    auto x = uniform((size_t)c.M * c.K, 11), w = uniform((size_t)c.N * c.K, 12);
    for (WType t : {WType::Q8, WType::Q4}) {
      const PackedQuant q = pack_quant(quantize_matrix(w.data(), c.N, c.K, t));
      const WMatrix wm{t, c.N, c.K, q.data.data(), q.scale.data()};
      std::vector<uint8_t> scratch(wmatmul_scratch_bytes(c.M, c.K));
      std::vector<float> want((size_t)c.M * c.N);
      wmatmul_quant(QVariant::kPortable, want.data(), x.data(), wm, c.M, scratch.data(), 1);
      for (QVariant v : {QVariant::kAvx2, QVariant::kAvx512Vnni}) {
        if (!qvariant_supported(v)) continue;
        for (int threads : {1, 2}) {
          std::vector<float> got((size_t)c.M * c.N, -1.f);
          wmatmul_quant(v, got.data(), x.data(), wm, c.M, scratch.data(), threads);
          EXPECT_TRUE(bits_equal(got, want)) << qvariant_name(v) << " " << quant_name(t)
                                             << " M" << c.M << " N" << c.N << " K" << c.K;
          ++checked;
        }
      }
    }
  }
  if (checked == 0) GTEST_SKIP() << "this CPU has no SIMD variant to compare with";
}

// The kernel in use is the widest the CPU has: with AVX-512 VNNI, that one; with AVX2 and FMA,
// the AVX2 one.
TEST(WMatmulVariants, TheBestVariantIsTheWidestTheCpuHas) {
  const CpuFeatures& f = host_cpu();
  if (f.avx512_vnni && f.avx512bw && f.avx512vl) {
    EXPECT_EQ(qvariant_best(), QVariant::kAvx512Vnni) << qvariant_name(qvariant_best());
  } else if (f.avx2 && f.fma) {
    EXPECT_EQ(qvariant_best(), QVariant::kAvx2) << qvariant_name(qvariant_best());
  } else {
    EXPECT_EQ(qvariant_best(), QVariant::kPortable) << qvariant_name(qvariant_best());
  }
}

}  // namespace
}  // namespace tandem::test
