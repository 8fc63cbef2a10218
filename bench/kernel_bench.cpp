// Per-kernel timings of a backend on the `small` config's shapes (Google Benchmark). Reports
// FLOP/s for the GEMMs and bytes/s for the memory-bound kernels.
//   kernel_bench [--benchmark_filter=REGEX]   (TANDEM_BENCH_BACKEND, TANDEM_BENCH_THREADS)
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "tandem/backend/backend.h"
#include "tandem/core/rng.h"
#include "tandem/infer/quant.h"

using namespace tandem;

namespace {

Backend& be() {
  static std::unique_ptr<Backend> b = [] {
    const char* name = std::getenv("TANDEM_BENCH_BACKEND");
    const char* threads = std::getenv("TANDEM_BENCH_THREADS");
    return make_backend(name ? name : "cpu", threads ? std::atoi(threads) : 2);
  }();
  return *b;
}

// A device buffer of n random floats in [-1, 1).
struct Buf {
  float* p;
  size_t n;
  explicit Buf(size_t count) : n(count) {
    p = static_cast<float*>(be().alloc(n * sizeof(float)));
    std::vector<float> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = 2 * rng_uniform(3, 0, i) - 1;
    be().to_device(p, h.data(), n * sizeof(float));
  }
  ~Buf() { be().release(p); }
};

// small: N = 8 x 256 tokens, C = 288, F = 768, H = 6, V = 4096
constexpr int N = 2048, C = 288, F = 768, H = 6, D = 48, V = 4096;

void BM_matmul_forward(benchmark::State& st) {
  const int M = N, n = (int)st.range(0), K = (int)st.range(1);
  Buf x((size_t)M * K), w((size_t)n * K), out((size_t)M * n);
  for (auto _ : st) be().matmul_forward(out.p, x.p, w.p, M, n, K), be().synchronize();
  st.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * M * n * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_matmul_forward)
    ->Args({3 * C, C})
    ->Args({2 * F, C})
    ->Args({C, F})
    ->Args({V, C})
    ->UseRealTime();

void BM_matmul_backward(benchmark::State& st) {
  const int M = N, n = (int)st.range(0), K = (int)st.range(1);
  Buf x((size_t)M * K), w((size_t)n * K), g((size_t)M * n), dx((size_t)M * K), dw((size_t)n * K);
  for (auto _ : st) be().matmul_backward(dx.p, dw.p, g.p, x.p, w.p, M, n, K), be().synchronize();
  st.counters["GFLOP/s"] = benchmark::Counter(
      4.0 * M * n * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_matmul_backward)
    ->Args({3 * C, C})
    ->Args({2 * F, C})
    ->Args({C, F})
    ->Args({V, C})
    ->UseRealTime();

// Inference matmuls of a 128-token prefill on gpt2-124m's shapes (fused qkv, wo, fused
// gate/up, down), in f32, Q8 and Q4 (range 2: 0, 1, 2).
void BM_wmatmul_prefill(benchmark::State& st) {
  const int M = 128, n = (int)st.range(0), K = (int)st.range(1);
  const WType t = st.range(2) == 0 ? WType::F32 : st.range(2) == 1 ? WType::Q8 : WType::Q4;
  std::vector<float> w((size_t)n * K), xs((size_t)M * K);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 2 * rng_uniform(5, 0, i) - 1;
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = 2 * rng_uniform(6, 0, i) - 1;
  std::vector<float> packed;
  PackedQuant q;
  WMatrix wm{t, n, K, nullptr, nullptr};
  if (t == WType::F32) {
    packed = pack_f32(w.data(), n, K);
    wm.data = packed.data();
  } else {
    q = pack_quant(quantize_matrix(w.data(), n, K, t));
    wm.data = q.data.data();
    wm.scale = q.scale.data();
  }
  std::vector<uint8_t> scratch(wmatmul_scratch_bytes(M, K));
  std::vector<float> out((size_t)M * n);
  for (auto _ : st) be().wmatmul_forward(out.data(), xs.data(), wm, M, scratch.data());
  st.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * M * n * K, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_wmatmul_prefill)
    ->ArgsProduct({{2304}, {768}, {0, 1, 2}})
    ->ArgsProduct({{768}, {768}, {0, 1, 2}})
    ->ArgsProduct({{4096}, {768}, {0, 1, 2}})
    ->ArgsProduct({{768}, {2048}, {0, 1, 2}})
    ->UseRealTime();

void BM_attention(benchmark::State& st) {
  AttnShape s{8, 256, H, H, D};
  Buf qkv((size_t)N * s.qkv_stride()), out((size_t)N * H * D), lse((size_t)8 * H * 256);
  Buf dqkv((size_t)N * s.qkv_stride()), dout((size_t)N * H * D);
  const bool bwd = st.range(0);
  be().attention_forward(out.p, lse.p, qkv.p, s);
  for (auto _ : st) {
    if (bwd)
      be().attention_backward(dqkv.p, dout.p, qkv.p, out.p, lse.p, s);
    else
      be().attention_forward(out.p, lse.p, qkv.p, s);
    be().synchronize();
  }
  // causal: half of the 4*T*T*D multiply-adds per head forward, twice that backward
  double flops = 2.0 * 8 * H * 256.0 * 256 * D * (bwd ? 2 : 1);
  st.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_attention)->Arg(0)->Arg(1)->UseRealTime();

// A prompt's attention over the KV cache (what a prefill runs per layer): P new tokens at
// positions 0..P-1 of gpt2-124m's shape (12 heads of 64), one sequence.
void BM_attention_kv_prefill(benchmark::State& st) {
  const int P = (int)st.range(0), Hq = 12, Dq = 64, Tmax = 1024;
  AttnShape s{1, P, Hq, Hq, Dq};
  Buf qkv((size_t)P * s.qkv_stride()), out((size_t)P * Hq * Dq);
  Buf kc((size_t)Tmax * Hq * Dq), vc((size_t)Tmax * Hq * Dq);
  for (auto _ : st) {
    be().attention_kv_forward(out.p, kc.p, vc.p, qkv.p, s, 0, P);
    be().synchronize();
  }
  const double flops = 2.0 * Hq * (double)P * (P + 1) * Dq;  // causal: QK^T and PV
  st.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_attention_kv_prefill)->Arg(128)->Arg(512)->UseRealTime();

void BM_rmsnorm_forward(benchmark::State& st) {
  Buf x((size_t)N * C), w(C), out((size_t)N * C), r(N);
  for (auto _ : st) be().rmsnorm_forward(out.p, r.p, x.p, w.p, N, C, 1e-5f), be().synchronize();
  st.SetBytesProcessed(st.iterations() * 2 * (int64_t)N * C * 4);
}
BENCHMARK(BM_rmsnorm_forward)->UseRealTime();

void BM_swiglu_forward(benchmark::State& st) {
  Buf gu((size_t)N * 2 * F), out((size_t)N * F);
  for (auto _ : st) be().swiglu_forward(out.p, gu.p, N, F), be().synchronize();
  st.SetBytesProcessed(st.iterations() * 3 * (int64_t)N * F * 4);
}
BENCHMARK(BM_swiglu_forward)->UseRealTime();

void BM_cross_entropy(benchmark::State& st) {
  Buf logits((size_t)N * V), losses(N);
  std::vector<int32_t> t(N);
  for (int i = 0; i < N; ++i) t[i] = (int32_t)(rng_u64(5, 0, i) % V);
  auto* td = static_cast<int32_t*>(be().alloc(N * sizeof(int32_t)));
  be().to_device(td, t.data(), N * sizeof(int32_t));
  for (auto _ : st)
    be().cross_entropy(losses.p, nullptr, logits.p, td, N, V, 1.f), be().synchronize();
  st.SetBytesProcessed(st.iterations() * (int64_t)N * V * 4);
  be().release(td);
}
BENCHMARK(BM_cross_entropy)->UseRealTime();

void BM_adamw(benchmark::State& st) {
  const size_t n = 7'000'000;
  Buf p(n), m(n), v(n), g(n);
  int64_t t = 1;
  for (auto _ : st)
    be().adamw(p.p, m.p, v.p, g.p, n, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, t++), be().synchronize();
  st.SetBytesProcessed(st.iterations() * (int64_t)n * 4 * 7);
}
BENCHMARK(BM_adamw)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("kernels", be().describe());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
