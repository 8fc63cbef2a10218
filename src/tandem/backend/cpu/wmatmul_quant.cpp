// wmatmul against Q8 / Q4 weights (layouts in backend.h). Each row of x is quantized to int8
// blocks of 32 (scale max|x| / 127). Output (m, n) is then defined as
//   acc = 0; for each block b in order: acc = fma(float(isum_b), dx_b * dw_nb, acc)
// where isum_b is the exact integer dot product of the block. Three variants compute exactly
// that, so they give the same bits (and M, tiles and threads never change an output):
//   AVX-512 VNNI: 16 rows of W per vector lane-wise; vpdpbusd of the unsigned stored weights
//                 against 4 broadcast activations, started from -offset * (sum of the block's
//                 activations) so the lane ends as the signed dot product;
//   AVX2:         the same per 8 rows, with the sign trick (maddubs / madd);
//   portable:     plain C++.
// GCC 12's AVX-512 intrinsics start from an "undefined" vector that -Wuninitialized reports
// inside the system header.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TANDEM_X86 1
#endif

namespace tandem {
namespace {

inline int offset_of(WType t) { return t == WType::Q8 ? 128 : 8; }

// The activations of one call, quantized: per row K int8 values, and per block its scale and
// -offset * (sum of its values).
struct QX {
  int K = 0, nb = 0;
  int8_t* q = nullptr;
  float* d = nullptr;
  int32_t* corr = nullptr;
};

QX carve_scratch(void* scratch, int M, int K) {
  auto align = [](void* p) {
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
  };
  QX x;
  x.K = K;
  x.nb = K / kQBlock;
  x.q = static_cast<int8_t*>(align(scratch));
  x.d = static_cast<float*>(align(x.q + (size_t)M * K));
  x.corr = static_cast<int32_t*>(align(x.d + (size_t)M * x.nb));
  return x;
}

void quantize_row(const QX& qx, int m, const float* x, int offset) {
  int8_t* q = qx.q + (size_t)m * qx.K;
  for (int b = 0; b < qx.nb; ++b) {
    const float* xb = x + (size_t)b * kQBlock;
    float amax = 0.f;
    for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float s = amax / 127.f, inv = s > 0.f ? 1.f / s : 0.f;
    int32_t sum = 0;
    for (int j = 0; j < kQBlock; ++j) {
      const int8_t v = (int8_t)std::nearbyint(xb[j] * inv);
      q[b * kQBlock + j] = v;
      sum += v;
    }
    qx.d[(size_t)m * qx.nb + b] = s;
    qx.corr[(size_t)m * qx.nb + b] = -offset * sum;
  }
}

struct QW {
  WType type;
  const uint8_t* data;
  const float* scale;
  int K, nb;
  size_t panel_bytes;  // K * 16 (Q8) or K * 8 (Q4)
  const uint8_t* panel(int p) const { return data + (size_t)p * panel_bytes; }
  const float* panel_scale(int p) const { return scale + (size_t)p * nb * kQPanel; }
};

// ---- portable ---------------------------------------------------------------------------

// q + offset of row r of panel p at k.
inline int stored(const QW& w, int p, int r, int k) {
  const uint8_t* base = w.panel(p);
  if (w.type == WType::Q8) return base[(size_t)(k / 4) * 64 + r * 4 + k % 4];
  const int b = k / kQBlock, g = (k % kQBlock) / 4;
  const uint8_t byte = base[(size_t)b * 256 + (g / 2) * 64 + r * 4 + k % 4];
  return g % 2 == 0 ? (byte & 0x0F) : (byte >> 4);
}

void tile_portable(float* out, int ldo, const QX& qx, int m0, int mr, const QW& w, int p,
                   int nvalid) {
  const int off = offset_of(w.type);
  for (int m = 0; m < mr; ++m)
    for (int r = 0; r < nvalid; ++r) {
      const int8_t* xq = qx.q + (size_t)(m0 + m) * qx.K;
      float acc = 0.f;
      for (int b = 0; b < qx.nb; ++b) {
        int32_t isum = 0;
        for (int k = b * kQBlock; k < (b + 1) * kQBlock; ++k)
          isum += (stored(w, p, r, k) - off) * xq[k];
        const float s = qx.d[(size_t)(m0 + m) * qx.nb + b] * w.panel_scale(p)[b * kQPanel + r];
        acc = std::fma((float)isum, s, acc);
      }
      out[(size_t)m * ldo + r] = acc;
    }
}

inline int32_t load4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#if defined(TANDEM_X86)
// ---- AVX2: one panel (two halves of 8 rows), MR rows of x ----------------------------------

#define TANDEM_AVX2 __attribute__((target("avx2,fma")))

// The signed weights of half h (rows 8h..8h+7), group g of block b: 8 lanes x 4 bytes.
TANDEM_AVX2 inline __m256i w_group_avx2(const QW& w, const uint8_t* panel, int b, int g, int h) {
  if (w.type == WType::Q8) {
    const __m256i v = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(panel + (size_t)(b * 8 + g) * 64 + h * 32));
    return _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80));
  }
  const __m256i v = _mm256_loadu_si256(
      reinterpret_cast<const __m256i*>(panel + (size_t)b * 256 + (g / 2) * 64 + h * 32));
  const __m256i nib = g % 2 == 0 ? v : _mm256_srli_epi16(v, 4);
  return _mm256_sub_epi8(_mm256_and_si256(nib, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}

template <int MR>
TANDEM_AVX2 void tile_avx2(float* out, int ldo, const QX& qx, int m0, const QW& w, int p,
                           int nvalid) {
  const uint8_t* panel = w.panel(p);
  const float* ps = w.panel_scale(p);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[MR][2];
  for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  for (int b = 0; b < qx.nb; ++b) {
    __m256i ia[MR][2];
    for (int m = 0; m < MR; ++m) ia[m][0] = ia[m][1] = _mm256_setzero_si256();
    for (int g = 0; g < kQBlock / 4; ++g) {
      const __m256i w0 = w_group_avx2(w, panel, b, g, 0), w1 = w_group_avx2(w, panel, b, g, 1);
      for (int m = 0; m < MR; ++m) {
        const __m256i xb = _mm256_set1_epi32(load4(qx.q + (size_t)(m0 + m) * qx.K + b * kQBlock + 4 * g));
        const __m256i ax = _mm256_sign_epi8(xb, xb);
        ia[m][0] = _mm256_add_epi32(ia[m][0], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w0, xb)), ones));
        ia[m][1] = _mm256_add_epi32(ia[m][1], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w1, xb)), ones));
      }
    }
    const __m256 s0 = _mm256_loadu_ps(ps + b * kQPanel), s1 = _mm256_loadu_ps(ps + b * kQPanel + 8);
    for (int m = 0; m < MR; ++m) {
      const __m256 dx = _mm256_set1_ps(qx.d[(size_t)(m0 + m) * qx.nb + b]);
      acc[m][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[m][0]), _mm256_mul_ps(dx, s0), acc[m][0]);
      acc[m][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[m][1]), _mm256_mul_ps(dx, s1), acc[m][1]);
    }
  }
  for (int m = 0; m < MR; ++m) {
    alignas(32) float lanes[16];
    _mm256_store_ps(lanes, acc[m][0]);
    _mm256_store_ps(lanes + 8, acc[m][1]);
    std::memcpy(out + (size_t)m * ldo, lanes, nvalid * sizeof(float));
  }
}

// ---- AVX-512 VNNI: NP panels (16 rows each), MR rows of x ------------------------------------

#define TANDEM_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

template <int MR, int NP>
TANDEM_VNNI void tile_vnni(float* out, int ldo, const QX& qx, int m0, const QW& w, int p0,
                           int nvalid) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const int8_t* xrow[MR];
  for (int m = 0; m < MR; ++m) xrow[m] = qx.q + (size_t)(m0 + m) * qx.K;
  __m512 acc[MR][NP];
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < NP; ++p) acc[m][p] = _mm512_setzero_ps();
  for (int b = 0; b < qx.nb; ++b) {
    __m512i ia[MR][NP];
    for (int m = 0; m < MR; ++m) {
      const __m512i c = _mm512_set1_epi32(qx.corr[(size_t)(m0 + m) * qx.nb + b]);
      for (int p = 0; p < NP; ++p) ia[m][p] = c;
    }
    for (int c = 0; c < kQBlock / 8; ++c) {  // two groups of 4 k per step
      __m512i wlo[NP], whi[NP];
      for (int p = 0; p < NP; ++p) {
        const uint8_t* panel = w.panel(p0 + p);
        if (w.type == WType::Q8) {
          wlo[p] = _mm512_loadu_si512(panel + (size_t)(b * 8 + 2 * c) * 64);
          whi[p] = _mm512_loadu_si512(panel + (size_t)(b * 8 + 2 * c + 1) * 64);
        } else {
          const __m512i v = _mm512_loadu_si512(panel + (size_t)b * 256 + c * 64);
          wlo[p] = _mm512_and_si512(v, low4);
          whi[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        }
      }
      for (int m = 0; m < MR; ++m) {
        const int8_t* xk = xrow[m] + b * kQBlock + 8 * c;
        const __m512i x0 = _mm512_set1_epi32(load4(xk)), x1 = _mm512_set1_epi32(load4(xk + 4));
        for (int p = 0; p < NP; ++p) {
          ia[m][p] = _mm512_dpbusd_epi32(ia[m][p], wlo[p], x0);
          ia[m][p] = _mm512_dpbusd_epi32(ia[m][p], whi[p], x1);
        }
      }
    }
    __m512 ws[NP];
    for (int p = 0; p < NP; ++p) ws[p] = _mm512_loadu_ps(w.panel_scale(p0 + p) + b * kQPanel);
    for (int m = 0; m < MR; ++m) {
      const __m512 dx = _mm512_set1_ps(qx.d[(size_t)(m0 + m) * qx.nb + b]);
      for (int p = 0; p < NP; ++p)
        acc[m][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[m][p]), _mm512_mul_ps(dx, ws[p]), acc[m][p]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int p = 0; p < NP; ++p) {
      const int cols = std::min(kQPanel, nvalid - p * kQPanel);
      if (cols > 0)
        _mm512_mask_storeu_ps(out + (size_t)m * ldo + p * kQPanel,
                              (__mmask16)((1u << cols) - 1), acc[m][p]);
    }
}

// Q4 panels p0.. p0+np-1 rewritten as Q8-layout bytes holding q + 8 (the Q4 offset stays, and
// so does the correction the activations carry): the low nibbles of chunk c of block b are
// 4-k group 2c, the high ones group 2c + 1, exactly what tile_vnni extracts on the fly. A
// prefill then unpacks each panel once instead of once per 4 rows of x; the integer sums,
// and so the bits, are the same.
TANDEM_VNNI void unpack_q4_panels(uint8_t* dst, const QW& w, int p0, int np) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  for (int p = 0; p < np; ++p) {
    const uint8_t* src = w.panel(p0 + p);
    uint8_t* d = dst + (size_t)p * w.K * kQPanel;
    for (int b = 0; b < w.nb; ++b)
      for (int c = 0; c < kQBlock / 8; ++c) {
        const __m512i v = _mm512_loadu_si512(src + (size_t)b * 256 + c * 64);
        _mm512_store_si512(d + (size_t)(b * 8 + 2 * c) * 64, _mm512_and_si512(v, low4));
        _mm512_store_si512(d + (size_t)(b * 8 + 2 * c + 1) * 64,
                           _mm512_and_si512(_mm512_srli_epi16(v, 4), low4));
      }
  }
}
#endif

// Calls f.template operator()<MR>() for the runtime mr in 1..4.
template <class F>
void with_mr(int mr, F&& f) {
  switch (mr) {
    case 1: f.template operator()<1>(); break;
    case 2: f.template operator()<2>(); break;
    case 3: f.template operator()<3>(); break;
    default: f.template operator()<4>(); break;
  }
}

#if defined(TANDEM_X86)
bool cpu_has(const char* feature) {
  __builtin_cpu_init();
  if (std::strcmp(feature, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#endif

}  // namespace

bool qvariant_supported(QVariant v) {
  switch (v) {
    case QVariant::kPortable: return true;
#if defined(TANDEM_X86)
    case QVariant::kAvx2: return cpu_has("avx2");
    case QVariant::kAvx512Vnni: return cpu_has("avx512vnni");
#endif
    default: return false;
  }
}

QVariant qvariant_best() {
  static const QVariant best = qvariant_supported(QVariant::kAvx512Vnni) ? QVariant::kAvx512Vnni
                               : qvariant_supported(QVariant::kAvx2)     ? QVariant::kAvx2
                                                                         : QVariant::kPortable;
  return best;
}

const char* qvariant_name(QVariant v) {
  switch (v) {
    case QVariant::kAvx2: return "avx2";
    case QVariant::kAvx512Vnni: return "avx512-vnni";
    default: return "portable";
  }
}

void wmatmul_quant(QVariant v, float* out, const float* x, const WMatrix& w, int M,
                   void* scratch, int threads) {
  const int N = w.N, K = w.K;
  TANDEM_CHECK(w.type != WType::F32 && K % kQBlock == 0 && scratch != nullptr &&
               w.scale != nullptr && qvariant_supported(v));
  if (M == 0) return;
  const QX qx = carve_scratch(scratch, M, K);
  const QW qw{w.type, static_cast<const uint8_t*>(w.data), w.scale, K, K / kQBlock,
              w.type == WType::Q8 ? (size_t)K * kQPanel : (size_t)K * kQPanel / 2};
  const int off = offset_of(w.type);
  const int panels = (N + kQPanel - 1) / kQPanel;
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int m = 0; m < M; ++m) quantize_row(qx, m, x + (size_t)m * K, off);
    // An even share of panels per thread, taken in pairs (a single one at the end of an odd
    // share); W panels outermost so they stay in cache while every row of x passes them.
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int p0 = (int)((long)panels * tid / nt), p1 = (int)((long)panels * (tid + 1) / nt);
#if defined(TANDEM_X86)
    // Q4 with more than one tile of rows: each panel pair is unpacked once (see above).
    const bool unpack = v == QVariant::kAvx512Vnni && w.type == WType::Q4 && M > 4;
    static thread_local std::vector<uint8_t> ubuf;
    if (unpack && ubuf.size() < (size_t)2 * K * kQPanel + 64) ubuf.resize((size_t)2 * K * kQPanel + 64);
    uint8_t* const ualigned = reinterpret_cast<uint8_t*>(
        (reinterpret_cast<uintptr_t>(ubuf.data()) + 63) & ~uintptr_t(63));
#endif
    for (int p = p0; p < p1; p += 2) {
      const int np = std::min(2, p1 - p), n0 = p * kQPanel;
      const int nvalid = std::min(N - n0, np * kQPanel);
      // The VNNI tile's weights: the stored panels p.., or their unpacked copy (panel 0..).
      QW vw = qw;
      int vp = p;
#if defined(TANDEM_X86)
      if (unpack) {
        unpack_q4_panels(ualigned, qw, p, np);
        vw = QW{WType::Q8, ualigned, qw.panel_scale(p), K, qw.nb, (size_t)K * kQPanel};
        vp = 0;
      }
#endif
      for (int m = 0; m < M; m += 4) {
        const int mr = std::min(4, M - m);
        float* o = out + (size_t)m * N + n0;
        switch (v) {
#if defined(TANDEM_X86)
          case QVariant::kAvx512Vnni:
            with_mr(mr, [&]<int MR>() {
              if (np == 2) tile_vnni<MR, 2>(o, N, qx, m, vw, vp, nvalid);
              else tile_vnni<MR, 1>(o, N, qx, m, vw, vp, nvalid);
            });
            break;
          case QVariant::kAvx2:
            for (int h = 0; h < np; ++h) {
              const int nv = std::min(kQPanel, nvalid - h * kQPanel);
              for (int mm = m; mm < m + mr; mm += 2)
                with_mr(std::min(2, m + mr - mm), [&]<int MR>() {
                  if constexpr (MR <= 2)
                    tile_avx2<MR>(out + (size_t)mm * N + n0 + h * kQPanel, N, qx, mm, qw, p + h, nv);
                });
            }
            break;
#endif
          default:
            for (int h = 0; h < np; ++h)
              tile_portable(o + h * kQPanel, N, qx, m, mr, qw, p + h,
                            std::min(kQPanel, nvalid - h * kQPanel));
            break;
        }
      }
    }
  }
}

}  // namespace tandem
