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
#include <array>
#include <cmath>
#include <cstring>
#include <utility>
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
//
// The weight vectors are pinned in registers (the empty asm): left to itself GCC folds them
// into the FMAs as memory operands, one reload per x row, and a 4-row tile then ran at 40 % of
// the FMA peak instead of ~100 % (measured on Zen 5). The first `npf` steps of k also
// prefetch one line per panel from `pf` (a share of the next panel group): the next group is
// found in cache and the weight stream from memory overlaps the arithmetic instead of
// preceding it.
#if defined(__AVX512F__)
constexpr int kMaxTileRows = 12;  // 12 x 2 accumulators + 2 weights + 1 broadcast: 27 of 32 zmm
#elif defined(TANDEM_WMM_SIMD)
constexpr int kMaxTileRows = 3;   // 3 x 4 accumulators + 4 weights: 16 ymm
#else
constexpr int kMaxTileRows = 4;
#endif
constexpr int kMaxTilePanels = 2;

template <int MR, int NP>
void panel_f32(float* out, int ldo, const float* x, int K, const float* wp, size_t pstride,
               int nvalid, const float* pf, int npf) {
#if defined(__AVX512F__)
  __m512 acc[MR][NP];
  #pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
    #pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) acc[m][p] = _mm512_setzero_ps();
  auto step = [&](int k) __attribute__((always_inline)) {
    __m512 w[NP];
    #pragma GCC unroll 16
    for (int p = 0; p < NP; ++p) {
      __m512 v = _mm512_loadu_ps(wp + p * pstride + (size_t)k * 16);
      asm("" : "+v"(v));
      w[p] = v;
    }
    #pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512 xb = _mm512_set1_ps(x[(size_t)m * K + k]);
      #pragma GCC unroll 16
      for (int p = 0; p < NP; ++p) acc[m][p] = _mm512_fmadd_ps(xb, w[p], acc[m][p]);
    }
  };
  int k = 0;
  for (; k < npf; ++k) {  // the first npf steps also prefetch one line per panel of pf
    step(k);
    #pragma GCC unroll 16
    for (int p = 0; p < NP; ++p)
      _mm_prefetch((const char*)(pf + p * pstride + (size_t)k * 16), _MM_HINT_T0);
  }
  for (; k < K; ++k) step(k);
  #pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
    #pragma GCC unroll 16
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
    for (int p = 0; p < 2 * NP; ++p) {
      __m256 v = _mm256_loadu_ps(wp + (p / 2) * pstride + (size_t)k * 16 + (p % 2) * 8);
      asm("" : "+x"(v));
      w[p] = v;
    }
    if (k < npf)
      for (int p = 0; p < NP; ++p)
        _mm_prefetch((const char*)(pf + p * pstride + (size_t)k * 16), _MM_HINT_T0);
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
  (void)pf;
  (void)npf;
  for (int m = 0; m < MR; ++m)
    for (int j = 0; j < nvalid; ++j) {
      float s = 0.f;
      const float* col = wp + (j / 16) * pstride + (j % 16);
      for (int k = 0; k < K; ++k) s = std::fma(x[(size_t)m * K + k], col[(size_t)k * 16], s);
      out[(size_t)m * ldo + j] = s;
    }
#endif
}

// panel_f32 for every tile shape up to kMaxTileRows x kMaxTilePanels, indexed [rows-1][panels-1].
using PanelFn = void (*)(float*, int, const float*, int, const float*, size_t, int,
                         const float*, int);
template <int... I>
constexpr std::array<PanelFn, sizeof...(I)> panel_table(std::integer_sequence<int, I...>) {
  return {&panel_f32<I / kMaxTilePanels + 1, I % kMaxTilePanels + 1>...};
}
constexpr auto kPanelFns =
    panel_table(std::make_integer_sequence<int, kMaxTileRows * kMaxTilePanels>{});

}  // namespace

void CpuBackend::wmatmul_forward(float* out, const float* x, const WMatrix& w, int M,
                                 void* scratch) {
  const int N = w.N, K = w.K;
  TANDEM_CHECK(M >= 0 && N > 0 && K > 0);
  if (M == 0) return;
  if (w.type == WType::F32) {
    // An even share of panels per thread (a static split: measured faster than dynamic or
    // guided ones), taken in groups of kMaxTilePanels. Within a group the x rows pass in
    // tiles of at most kMaxTileRows, split evenly (16 rows: two of 8, not 12 + 4), while the
    // group stays in L1/L2, and each tile prefetches a share of the next group.
    const float* W = static_cast<const float*>(w.data);
    const size_t pstride = (size_t)K * kF32Panel;
    const int panels = (N + kF32Panel - 1) / kF32Panel;
    const int tiles = (M + kMaxTileRows - 1) / kMaxTileRows;
#pragma omp parallel num_threads(threads_)
    {
      const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
      const int p0 = (int)((long)panels * tid / nt), p1 = (int)((long)panels * (tid + 1) / nt);
      for (int p = p0; p < p1; p += kMaxTilePanels) {
        const int np = std::min(kMaxTilePanels, p1 - p), n0 = p * kF32Panel;
        const int nvalid = std::min(N - n0, np * kF32Panel);
        const float* group = W + p * pstride;
        // The next group of this thread's share; the prefetches stay inside the packed matrix.
        const bool has_next = p + np < p1 && p + 2 * np <= panels;
        const float* next = has_next ? group + np * pstride : group;
        // Tile t prefetches its share of the next group's rows of k, so the next group's
        // stream from memory is spread over the whole pass instead of burdening one tile.
        const int share = (K + tiles - 1) / tiles;
        for (int t = 0; t < tiles; ++t) {
          const int m = (int)((long)M * t / tiles), mr = (int)((long)M * (t + 1) / tiles) - m;
          const int k0 = std::min(K, t * share), npf = has_next ? std::min(share, K - k0) : 0;
          kPanelFns[(mr - 1) * kMaxTilePanels + np - 1](out + (size_t)m * N + n0, N,
                                                        x + (size_t)m * K, K, group, pstride,
                                                        nvalid, next + (size_t)k0 * 16, npf);
        }
      }
    }
    return;
  }
  wmatmul_quant(qvariant_best(), out, x, w, M, scratch, threads_);
}

}  // namespace tandem
