// Measured fp32 peak of this machine: independent FMA chains on every thread, the widest
// vector unit the build targets. Benchmarks report achieved FLOP/s as a fraction of this.
#pragma once

// GCC 12 flags its own AVX-512 reduction intrinsics as using uninitialized placeholders.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <omp.h>

#include <chrono>

namespace tandem::bench {

inline double measure_peak_flops(int threads, long iters = 20'000'000) {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
#if defined(__AVX512F__)
      __m512 acc[12];
      for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
      const __m512 a = _mm512_set1_ps(0.9999f), b = _mm512_set1_ps(0.0001f);
      for (long it = 0; it < iters / 12; ++it)
        for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
      for (int i = 0; i < 12; ++i) sink += _mm512_reduce_add_ps(acc[i]);
#elif defined(__AVX2__) && defined(__FMA__)
      __m256 acc[12];
      for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
      const __m256 a = _mm256_set1_ps(0.9999f), b = _mm256_set1_ps(0.0001f);
      for (long it = 0; it < iters / 12; ++it)
        for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
      alignas(32) float tmp[8];
      for (int i = 0; i < 12; ++i) {
        _mm256_store_ps(tmp, acc[i]);
        for (float x : tmp) sink += x;
      }
#else
      float acc[12][8];
      for (int i = 0; i < 12; ++i)
        for (int k = 0; k < 8; ++k) acc[i][k] = 0.001f * i;
      for (long it = 0; it < iters / 12; ++it)
        for (int i = 0; i < 12; ++i)
          for (int k = 0; k < 8; ++k) acc[i][k] = acc[i][k] * 0.9999f + 0.0001f;
      for (int i = 0; i < 12; ++i)
        for (int k = 0; k < 8; ++k) sink += acc[i][k];
#endif
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
#if defined(__AVX512F__)
    const double lanes = 16;
#else
    const double lanes = 8;
#endif
    double flops = 2.0 * lanes * (double)(iters / 12) * 12 * threads / s;
    if (sink == 12345.f) flops += 1;  // keep the chains alive
    best = flops > best ? flops : best;
  }
  return best;
}

}  // namespace tandem::bench

#pragma GCC diagnostic pop
