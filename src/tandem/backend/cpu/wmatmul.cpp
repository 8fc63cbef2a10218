// wmatmul: out = x · Wᵀ against inference weights: fp32 panels here (AVX-512, AVX2 or scalar
// code picked at compile time), int8/4-bit blocks in wmatmul_quant.cpp. Tiles share loads across rows; each
// output element is one accumulator whose operation sequence depends only on K, never on the
// tile it sat in or on M, so batching does not change any row's bits.
// GCC 12's AVX-512 extract intrinsics start from an "undefined" vector that -Wuninitialized
// reports inside the system header.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/error.h"

namespace tandem {
namespace {

#if defined(__AVX2__) && defined(__FMA__)
#define TANDEM_WMM_SIMD 1
#endif

// fp32 against W packed in panels of kF32Panel rows (k-major inside a panel): MR x-rows by NP
// panels. Every output lane accumulates its dot product over k in order with FMAs, so no
// horizontal sums and no dependence on the tile shape.
template <int MR, int NP>
void panel_f32(float* out, int ldo, const float* x, int K, const float* wp, size_t pstride,
               int nvalid) {
#if defined(__AVX512F__)
  __m512 acc[MR][NP];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < NP; ++p) acc[m][p] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    __m512 w[NP];
    for (int p = 0; p < NP; ++p) w[p] = _mm512_loadu_ps(wp + p * pstride + (size_t)k * 16);
    for (int m = 0; m < MR; ++m) {
      const __m512 xb = _mm512_set1_ps(x[(size_t)m * K + k]);
      for (int p = 0; p < NP; ++p) acc[m][p] = _mm512_fmadd_ps(xb, w[p], acc[m][p]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < NP; ++p) {
      const int cols = std::min(16, nvalid - p * 16);
      if (cols == 16)
        _mm512_storeu_ps(out + (size_t)m * ldo + p * 16, acc[m][p]);
      else if (cols > 0)
        _mm512_mask_storeu_ps(out + (size_t)m * ldo + p * 16, (__mmask16)((1u << cols) - 1),
                              acc[m][p]);
    }
#elif defined(TANDEM_WMM_SIMD)
  __m256 acc[MR][2 * NP];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < 2 * NP; ++p) acc[m][p] = _mm256_setzero_ps();
  for (int k = 0; k < K; ++k) {
    __m256 w[2 * NP];
    for (int p = 0; p < 2 * NP; ++p)
      w[p] = _mm256_loadu_ps(wp + (p / 2) * pstride + (size_t)k * 16 + (p % 2) * 8);
    for (int m = 0; m < MR; ++m) {
      const __m256 xb = _mm256_set1_ps(x[(size_t)m * K + k]);
      for (int p = 0; p < 2 * NP; ++p) acc[m][p] = _mm256_fmadd_ps(xb, w[p], acc[m][p]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < 2 * NP; ++p) {
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, acc[m][p]);
      for (int j = 0; j < 8 && p * 8 + j < nvalid; ++j) out[(size_t)m * ldo + p * 8 + j] = tmp[j];
    }
#else
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < nvalid; ++j) {
      float s = 0.f;
      const float* col = wp + (j / 16) * pstride + (j % 16);
      for (int k = 0; k < K; ++k) s = std::fma(x[(size_t)m * K + k], col[(size_t)k * 16], s);
      out[(size_t)m * ldo + j] = s;
    }
#endif
}

template <int NP>
void panel_f32_rows(int mr, float* out, int ldo, const float* x, int K, const float* wp,
                    size_t pstride, int nvalid) {
  switch (mr) {
    case 1: panel_f32<1, NP>(out, ldo, x, K, wp, pstride, nvalid); break;
    case 2: panel_f32<2, NP>(out, ldo, x, K, wp, pstride, nvalid); break;
    case 3: panel_f32<3, NP>(out, ldo, x, K, wp, pstride, nvalid); break;
    case 4: panel_f32<4, NP>(out, ldo, x, K, wp, pstride, nvalid); break;
    case 5: panel_f32<5, NP>(out, ldo, x, K, wp, pstride, nvalid); break;
    default: panel_f32<6, NP>(out, ldo, x, K, wp, pstride, nvalid); break;
  }
}

}  // namespace

void CpuBackend::wmatmul_forward(float* out, const float* x, const WMatrix& w, int M,
                                 void* scratch) {
  const int N = w.N, K = w.K;
  TANDEM_CHECK(M >= 0 && N > 0 && K > 0);
  if (M == 0) return;
  if (w.type == WType::F32) {
    // An even share of panels per thread (a static split: measured faster than dynamic or
    // guided ones), taken in pairs with a single one at the end of an odd share; within a
    // pair every x row passes while the panels stay in L2.
    const float* W = static_cast<const float*>(w.data);
    const size_t pstride = (size_t)K * kF32Panel;
    const int panels = (N + kF32Panel - 1) / kF32Panel;
#pragma omp parallel num_threads(threads_)
    {
      const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
      const int p0 = (int)((long)panels * tid / nt), p1 = (int)((long)panels * (tid + 1) / nt);
      for (int p = p0; p < p1; p += 2) {
        const int np = std::min(2, p1 - p), n0 = p * kF32Panel;
        const int nvalid = std::min(N - n0, np * kF32Panel);
        for (int m = 0; m < M; m += 6) {
          const int mr = std::min(6, M - m);
          float* o = out + (size_t)m * N + n0;
          const float* xm = x + (size_t)m * K;
          if (np == 2)
            panel_f32_rows<2>(mr, o, N, xm, K, W + p * pstride, pstride, nvalid);
          else
            panel_f32_rows<1>(mr, o, N, xm, K, W + p * pstride, pstride, nvalid);
        }
      }
    }
    return;
  }
  wmatmul_quant(qvariant_best(), out, x, w, M, scratch, threads_);
}

}  // namespace tandem
