// wmatmul: out = x · Wᵀ against inference weights (fp32 panels, or int8/4-bit blocks), with
// AVX-512, AVX2 or scalar code picked at compile time. Tiles share loads across rows; each
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
inline float hsum256(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 sh = _mm_movehdup_ps(lo);
  lo = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, lo);
  return _mm_cvtss_f32(_mm_add_ss(lo, sh));
}
// Integer dot product of 32 signed bytes, as 8 int32 lanes (|x|, |w| <= 127).
inline __m256i dot32(__m256i x, __m256i w) {
  const __m256i ax = _mm256_sign_epi8(x, x), sw = _mm256_sign_epi8(w, x);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sw);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1));
#endif
}
inline __m256i unpack_q4(const uint8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
  return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}
#endif
#if defined(__AVX512F__)
// Horizontal sum in a fixed order.
inline float hsum512(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  return hsum256(_mm256_add_ps(lo, hi));
}
#endif

// Quantizes one row of K floats to int8 blocks: q = round(x / d), d = max|x| / 127.
void quantize_row(int8_t* q, float* d, const float* x, int K) {
  for (int b = 0; b < K / kQBlock; ++b) {
    const float* xb = x + b * kQBlock;
    float amax = 0.f;
    for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float s = amax / 127.f, inv = s > 0.f ? 1.f / s : 0.f;
    d[b] = s;
    for (int j = 0; j < kQBlock; ++j) q[b * kQBlock + j] = (int8_t)std::nearbyint(xb[j] * inv);
  }
}

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

// The same tile for quantized W: xq/xd are the int8 rows and their block scales.
template <int MR, int NR, WType T>
void tile_q(float* out, int ldo, const int8_t* xq, const float* xd, const uint8_t* wq,
            const float* wd, int K) {
  const int nb = K / kQBlock;
  const size_t wrow = T == WType::Q8 ? (size_t)K : (size_t)K / 2;
#if defined(TANDEM_WMM_SIMD)
  __m256 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm256_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m256i wv[NR];
    for (int n = 0; n < NR; ++n) {
      const uint8_t* p = wq + n * wrow;
      wv[n] = T == WType::Q8
                  ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + b * kQBlock))
                  : unpack_q4(p + b * (kQBlock / 2));
    }
    for (int m = 0; m < MR; ++m) {
      const __m256i xv =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + (size_t)m * K + b * kQBlock));
      const float dx = xd[(size_t)m * nb + b];
      for (int n = 0; n < NR; ++n) {
        const __m256 s = _mm256_set1_ps(dx * wd[(size_t)n * nb + b]);
        acc[m][n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32(xv, wv[n])), s, acc[m][n]);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) out[m * ldo + n] = hsum256(acc[m][n]);
#else
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      float s = 0.f;
      for (int b = 0; b < nb; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < kQBlock; ++j) {
          int wv;
          if (T == WType::Q8) {
            wv = (int8_t)wq[n * wrow + b * kQBlock + j];
          } else {
            const uint8_t byte = wq[n * wrow + b * (kQBlock / 2) + (j & 15)];
            wv = (j < 16 ? (byte & 0x0F) : (byte >> 4)) - 8;
          }
          isum += wv * xq[(size_t)m * K + b * kQBlock + j];
        }
        s += (float)isum * (xd[(size_t)m * nb + b] * wd[(size_t)n * nb + b]);
      }
      out[m * ldo + n] = s;
    }
#endif
}

// Calls tile(mr, nr) for every tile of rows [0, M) x columns [n0, n1): W tiles outermost so a
// few W rows stay in L1 while every x row passes them.
template <class Tile>
void for_tiles(int M, int n0, int n1, Tile&& tile) {
  for (int n = n0; n < n1; n += 4)
    for (int m = 0; m < M; m += 4) tile(m, n, std::min(4, M - m), std::min(4, n1 - n));
}

template <class F>
void dispatch_tile(int mr, int nr, F&& f) {
  // f.template operator()<MR, NR>() for the runtime (mr, nr) in 1..4.
  auto with_nr = [&]<int MR>() {
    switch (nr) {
      case 1: f.template operator()<MR, 1>(); break;
      case 2: f.template operator()<MR, 2>(); break;
      case 3: f.template operator()<MR, 3>(); break;
      default: f.template operator()<MR, 4>(); break;
    }
  };
  switch (mr) {
    case 1: with_nr.template operator()<1>(); break;
    case 2: with_nr.template operator()<2>(); break;
    case 3: with_nr.template operator()<3>(); break;
    default: with_nr.template operator()<4>(); break;
  }
}

}  // namespace

void CpuBackend::wmatmul_forward(float* out, const float* x, const WMatrix& w, int M,
                                 void* scratch) {
  const int N = w.N, K = w.K;
  TANDEM_CHECK(M >= 0 && N > 0 && K > 0);
  if (M == 0) return;
  if (w.type == WType::F32) {
    // Pairs of panels per thread; within them every x row passes while the panels stay in L2.
    const float* W = static_cast<const float*>(w.data);
    const size_t pstride = (size_t)K * kF32Panel;
    const int panels = (N + kF32Panel - 1) / kF32Panel, pairs = (panels + 1) / 2;
#pragma omp parallel num_threads(threads_)
    {
      const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
      const int q0 = (int)((long)pairs * tid / nt), q1 = (int)((long)pairs * (tid + 1) / nt);
      for (int q = q0; q < q1; ++q) {
        const int p = 2 * q, np = std::min(2, panels - p), n0 = p * kF32Panel;
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
  const bool quant = w.type != WType::F32;
  TANDEM_CHECK(!quant || (K % kQBlock == 0 && scratch != nullptr && w.scale != nullptr));
  const int nb = K / kQBlock;
  int8_t* xq = static_cast<int8_t*>(scratch);
  float* xd = quant ? reinterpret_cast<float*>(
                          (reinterpret_cast<uintptr_t>(xq + (size_t)M * K) + 63) & ~uintptr_t(63))
                    : nullptr;
  const uint8_t* wq = static_cast<const uint8_t*>(w.data);
  const size_t wrow = w.type == WType::Q8 ? (size_t)K : (size_t)K / 2;
  const int tiles = (N + 3) / 4;
#pragma omp parallel num_threads(threads_)
  {
    if (quant) {
#pragma omp for schedule(static)
      for (int m = 0; m < M; ++m) quantize_row(xq + (size_t)m * K, xd + (size_t)m * nb, x + (size_t)m * K, K);
    }
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int n0 = std::min(N, (int)((long)tiles * tid / nt) * 4);
    const int n1 = std::min(N, (int)((long)tiles * (tid + 1) / nt) * 4);
    // With many x rows, 4-bit W tiles are expanded to int8 once and then run through the int8
    // tile: the same integer products and float operations as unpacking per tile, so the same
    // bits, without unpacking again for every group of rows.
    const bool expand = w.type == WType::Q4 && M > 4;
    static thread_local std::vector<int8_t> wide;
    if (expand && wide.size() < (size_t)4 * K) wide.resize((size_t)4 * K);
    for_tiles(M, n0, n1, [&](int m, int n, int mr, int nr) {
      float* o = out + (size_t)m * N + n;
      if (expand && m == 0)
        for (int r = 0; r < nr; ++r)
          for (int b = 0; b < nb; ++b) {
            const uint8_t* src = wq + (size_t)(n + r) * wrow + b * (kQBlock / 2);
            int8_t* dst = wide.data() + (size_t)r * K + b * kQBlock;
            for (int j = 0; j < kQBlock / 2; ++j) {
              dst[j] = (int8_t)((src[j] & 0x0F) - 8);
              dst[j + kQBlock / 2] = (int8_t)((src[j] >> 4) - 8);
            }
          }
      dispatch_tile(mr, nr, [&]<int MR, int NR>() {
        if (w.type == WType::Q8 || expand) {
          const uint8_t* wt = expand ? reinterpret_cast<const uint8_t*>(wide.data()) : wq + n * wrow;
          tile_q<MR, NR, WType::Q8>(o, N, xq + (size_t)m * K, xd + (size_t)m * nb, wt,
                                    w.scale + (size_t)n * nb, K);
        } else {
          tile_q<MR, NR, WType::Q4>(o, N, xq + (size_t)m * K, xd + (size_t)m * nb, wq + n * wrow,
                                    w.scale + (size_t)n * nb, K);
        }
      });
    });
  }
}

}  // namespace tandem
