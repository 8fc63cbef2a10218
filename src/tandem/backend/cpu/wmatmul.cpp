// wmatmul: out = x · Wᵀ against inference weights (fp32, or int8/4-bit blocks), with AVX-512,
// AVX2 or scalar code picked at compile time. Tiles of up to 4 x-rows by 4 W-rows share loads;
// each output element is one accumulator whose operation sequence depends only on K, never on
// the tile it sat in or on M, so batching does not change any row's bits.
// GCC 12's AVX-512 extract intrinsics start from an "undefined" vector that -Wuninitialized
// reports inside the system header.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

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

// out[m][n] for m < MR, n < NR: rows x[m] (stride K) against W rows w[n] (stride K).
template <int MR, int NR>
void tile_f32(float* out, int ldo, const float* x, const float* w, int K) {
#if defined(__AVX512F__)
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
    __m512 wv[NR];
    for (int n = 0; n < NR; ++n) wv[n] = _mm512_maskz_loadu_ps(mask, w + (size_t)n * K + k);
    for (int m = 0; m < MR; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + (size_t)m * K + k);
      for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_fmadd_ps(xv, wv[n], acc[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) out[m * ldo + n] = hsum512(acc[m][n]);
#elif defined(TANDEM_WMM_SIMD)
  __m256 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm256_setzero_ps();
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[NR];
    for (int n = 0; n < NR; ++n) wv[n] = _mm256_loadu_ps(w + (size_t)n * K + k);
    for (int m = 0; m < MR; ++m) {
      const __m256 xv = _mm256_loadu_ps(x + (size_t)m * K + k);
      for (int n = 0; n < NR; ++n) acc[m][n] = _mm256_fmadd_ps(xv, wv[n], acc[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      float s = hsum256(acc[m][n]);
      for (int kk = k; kk < K; ++kk) s += x[(size_t)m * K + kk] * w[(size_t)n * K + kk];
      out[m * ldo + n] = s;
    }
#else
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      float s = 0.f;
      for (int k = 0; k < K; ++k) s += x[(size_t)m * K + k] * w[(size_t)n * K + k];
      out[m * ldo + n] = s;
    }
#endif
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
    for_tiles(M, n0, n1, [&](int m, int n, int mr, int nr) {
      float* o = out + (size_t)m * N + n;
      dispatch_tile(mr, nr, [&]<int MR, int NR>() {
        switch (w.type) {
          case WType::F32:
            tile_f32<MR, NR>(o, N, x + (size_t)m * K, static_cast<const float*>(w.data) + (size_t)n * K, K);
            break;
          case WType::Q8:
            tile_q<MR, NR, WType::Q8>(o, N, xq + (size_t)m * K, xd + (size_t)m * nb, wq + n * wrow,
                                      w.scale + (size_t)n * nb, K);
            break;
          case WType::Q4:
            tile_q<MR, NR, WType::Q4>(o, N, xq + (size_t)m * K, xd + (size_t)m * nb, wq + n * wrow,
                                      w.scale + (size_t)n * nb, K);
            break;
        }
      });
    });
  }
}

}  // namespace tandem
