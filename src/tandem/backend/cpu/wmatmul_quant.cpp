// wmatmul against Q8 / Q4 weights (layouts in backend.h). Each row of x is quantized to int8
// blocks; then every output is defined as 16 float lanes per pair of blocks: lane l holds the
// exact integer dot product of values 4l .. 4l+3 of the pair (lanes 0-7 the first block, 8-15
// the second), times (x block scale * w block scale), accumulated into the lane with one FMA,
// pair after pair. At the end the 16 lanes are summed in a fixed order (reduce16). Three
// variants compute exactly that:
//   AVX-512 VNNI: vpdpbusd of the unsigned stored weights against the signed activations,
//                 started from a precomputed correction (-offset * sum of the 4 activations)
//                 so the lane is the signed dot product; 4 instructions per 64 products.
//   AVX2:         the same lanes with the sign trick (maddubs/madd) on two 256-bit halves.
//   portable:     plain C++, lane by lane.
// Tiles, M and the thread count change which loads are shared, never an output's operations.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TANDEM_X86 1
#endif

namespace tandem {
namespace {

constexpr int kPair = 2 * kQBlock;  // values per pair of blocks
constexpr int kLanes = kPair / 4;   // 16

// The fixed final order: halves, then quarters, then (l0 + l1) + (l2 + l3).
inline float reduce16(const float* v) {
  float a[8], l[4];
  for (int i = 0; i < 8; ++i) a[i] = v[i] + v[i + 8];
  for (int i = 0; i < 4; ++i) l[i] = a[i] + a[i + 4];
  return (l[0] + l[1]) + (l[2] + l[3]);
}

inline int offset_of(WType t) { return t == WType::Q8 ? 128 : 8; }

// The activations of one call, quantized: per row, Kp int8 values, and per lane (4 values) the
// block scale and -offset * (sum of the 4 values).
struct QX {
  int Kp = 0;
  int8_t* q = nullptr;
  float* d = nullptr;
  int32_t* corr = nullptr;
  const int8_t* row_q(int m) const { return q + (size_t)m * Kp; }
  const float* row_d(int m) const { return d + (size_t)m * (Kp / 4); }
  const int32_t* row_corr(int m) const { return corr + (size_t)m * (Kp / 4); }
};

QX carve_scratch(void* scratch, int M, int Kp) {
  auto align = [](void* p) {
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
  };
  QX x;
  x.Kp = Kp;
  x.q = static_cast<int8_t*>(align(scratch));
  x.d = static_cast<float*>(align(x.q + (size_t)M * Kp));
  x.corr = static_cast<int32_t*>(align(x.d + (size_t)M * Kp / 4));
  return x;
}

// Row m of x: q = round(x / d) with d = max|x| / 127 per block; padding blocks are zero.
void quantize_row(const QX& qx, int m, const float* x, int K, int offset) {
  int8_t* q = qx.q + (size_t)m * qx.Kp;
  float* d = qx.d + (size_t)m * (qx.Kp / 4);
  int32_t* corr = qx.corr + (size_t)m * (qx.Kp / 4);
  for (int b = 0; b < qx.Kp / kQBlock; ++b) {
    float s = 0.f;
    if (b < K / kQBlock) {
      const float* xb = x + (size_t)b * kQBlock;
      float amax = 0.f;
      for (int j = 0; j < kQBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
      s = amax / 127.f;
      const float inv = s > 0.f ? 1.f / s : 0.f;
      for (int j = 0; j < kQBlock; ++j) q[b * kQBlock + j] = (int8_t)std::nearbyint(xb[j] * inv);
    } else {
      std::memset(q + b * kQBlock, 0, kQBlock);
    }
    for (int l = 0; l < kQBlock / 4; ++l) {
      const int8_t* g = q + b * kQBlock + 4 * l;
      d[b * (kQBlock / 4) + l] = s;
      corr[b * (kQBlock / 4) + l] = -offset * (g[0] + g[1] + g[2] + g[3]);
    }
  }
}

struct QW {
  WType type;
  const uint8_t* data;
  const float* scale;
  size_t row_bytes;  // Kp (Q8) or Kp / 2 (Q4)
  int nscale;        // scales per row: Kp / 32
};

// ---- portable ---------------------------------------------------------------------------

// Stored value i (0 .. 63) of pair p of row n, unsigned (q + offset).
inline int stored(const QW& w, int n, int p, int i) {
  const uint8_t* r = w.data + (size_t)n * w.row_bytes;
  if (w.type == WType::Q8) return r[(size_t)p * kPair + i];
  const uint8_t byte = r[(size_t)p * (kPair / 2) + (i % kQBlock)];
  return i < kQBlock ? (byte & 0x0F) : (byte >> 4);
}

void tile_portable(float* out, int ldo, const QX& qx, int m0, int mr, const QW& w, int n0,
                   int nr) {
  const int off = offset_of(w.type), pairs = qx.Kp / kPair;
  for (int m = 0; m < mr; ++m)
    for (int n = 0; n < nr; ++n) {
      const int8_t* xq = qx.row_q(m0 + m);
      const float* xd = qx.row_d(m0 + m);
      float acc[kLanes] = {};
      for (int p = 0; p < pairs; ++p)
        for (int l = 0; l < kLanes; ++l) {
          int32_t dot = 0;
          for (int i = 0; i < 4; ++i)
            dot += (stored(w, n0 + n, p, 4 * l + i) - off) * xq[p * kPair + 4 * l + i];
          const float s = xd[p * kLanes + l] * w.scale[(size_t)(n0 + n) * w.nscale + 2 * p + l / 8];
          acc[l] = std::fma((float)dot, s, acc[l]);
        }
      out[(size_t)m * ldo + n] = reduce16(acc);
    }
}

#if defined(TANDEM_X86)
// ---- AVX2 ---------------------------------------------------------------------------------

#define TANDEM_AVX2 __attribute__((target("avx2,fma")))

// 32 signed weights (one block) of pair p of row n, in natural order.
TANDEM_AVX2 inline __m256i w_block_avx2(const QW& w, int n, int p, int half) {
  const uint8_t* r = w.data + (size_t)n * w.row_bytes;
  if (w.type == WType::Q8) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + (size_t)p * kPair + half * 32));
    return _mm256_xor_si256(v, _mm256_set1_epi8((char)0x80));
  }
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + (size_t)p * kQBlock));
  const __m256i nib = half == 0 ? v : _mm256_srli_epi16(v, 4);
  return _mm256_sub_epi8(_mm256_and_si256(nib, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}

// 8 lanes: the exact dot products of 4 int8 values each (|values| <= 127).
TANDEM_AVX2 inline __m256i dot_lanes_avx2(__m256i x, __m256i w) {
  const __m256i ax = _mm256_sign_epi8(x, x), sw = _mm256_sign_epi8(w, x);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1));
}

template <int MR, int NR>
TANDEM_AVX2 void tile_avx2(float* out, int ldo, const QX& qx, int m0, const QW& w, int n0) {
  const int pairs = qx.Kp / kPair;
  __m256 acc[MR][NR][2];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n][0] = acc[m][n][1] = _mm256_setzero_ps();
  for (int p = 0; p < pairs; ++p) {
    for (int h = 0; h < 2; ++h) {
      __m256i wv[NR];
      __m256 ws[NR];
      for (int n = 0; n < NR; ++n) {
        wv[n] = w_block_avx2(w, n0 + n, p, h);
        ws[n] = _mm256_set1_ps(w.scale[(size_t)(n0 + n) * w.nscale + 2 * p + h]);
      }
      for (int m = 0; m < MR; ++m) {
        const __m256i xv = _mm256_load_si256(
            reinterpret_cast<const __m256i*>(qx.row_q(m0 + m) + (size_t)p * kPair + h * 32));
        const __m256 xd = _mm256_load_ps(qx.row_d(m0 + m) + (size_t)p * kLanes + h * 8);
        for (int n = 0; n < NR; ++n)
          acc[m][n][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_lanes_avx2(xv, wv[n])),
                                         _mm256_mul_ps(xd, ws[n]), acc[m][n][h]);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      alignas(32) float lanes[kLanes];
      _mm256_store_ps(lanes, acc[m][n][0]);
      _mm256_store_ps(lanes + 8, acc[m][n][1]);
      out[(size_t)m * ldo + n] = reduce16(lanes);
    }
}

// ---- AVX-512 VNNI ---------------------------------------------------------------------------

#define TANDEM_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

template <int MR, int NR>
TANDEM_VNNI void tile_vnni(float* out, int ldo, const QX& qx, int m0, const QW& w, int n0) {
  const int pairs = qx.Kp / kPair;
  // Q4: the 32 bytes of a pair in both halves, the upper half shifted to its high nibbles.
  const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i pick = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(1), 1);
  __m512 acc[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) acc[m][n] = _mm512_setzero_ps();
  for (int p = 0; p < pairs; ++p) {
    __m512i wv[NR];
    __m512 ws[NR];
    for (int n = 0; n < NR; ++n) {
      const uint8_t* r = w.data + (size_t)(n0 + n) * w.row_bytes;
      if (w.type == WType::Q8) {
        wv[n] = _mm512_loadu_si512(r + (size_t)p * kPair);
      } else {
        const __m512i b = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + (size_t)p * kQBlock)));
        wv[n] = _mm512_and_si512(_mm512_srlv_epi16(b, shift), low4);
      }
      const float* sc = w.scale + (size_t)(n0 + n) * w.nscale + 2 * p;
      ws[n] = _mm512_permutexvar_ps(pick, _mm512_castps128_ps512(_mm_castsi128_ps(
                                              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc)))));
    }
    for (int m = 0; m < MR; ++m) {
      const __m512i xv = _mm512_load_si512(qx.row_q(m0 + m) + (size_t)p * kPair);
      const __m512i corr = _mm512_load_si512(qx.row_corr(m0 + m) + (size_t)p * kLanes);
      const __m512 xd = _mm512_load_ps(qx.row_d(m0 + m) + (size_t)p * kLanes);
      for (int n = 0; n < NR; ++n)
        acc[m][n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(corr, wv[n], xv)),
                                    _mm512_mul_ps(xd, ws[n]), acc[m][n]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) {
      alignas(64) float lanes[kLanes];
      _mm512_store_ps(lanes, acc[m][n]);
      out[(size_t)m * ldo + n] = reduce16(lanes);
    }
}
#endif

// Runs tile<MR, NR> for the runtime (mr, nr), 1 <= mr <= MRmax, 1 <= nr <= 4.
template <int MRmax, class Tile>
void dispatch(int mr, int nr, Tile&& tile) {
  auto with_nr = [&]<int MR>() {
    switch (nr) {
      case 1: tile.template operator()<MR, 1>(); break;
      case 2: tile.template operator()<MR, 2>(); break;
      case 3: tile.template operator()<MR, 3>(); break;
      default: tile.template operator()<MR, 4>(); break;
    }
  };
  if (MRmax >= 4 && mr >= 4) return with_nr.template operator()<(MRmax >= 4 ? 4 : 1)>();
  switch (mr) {
    case 1: with_nr.template operator()<1>(); break;
    case 2: with_nr.template operator()<2>(); break;
    default: with_nr.template operator()<(MRmax >= 3 ? 3 : 1)>(); break;
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
  const int N = w.N, K = w.K, Kp = wmatmul_kpad(K);
  TANDEM_CHECK(w.type != WType::F32 && K % kQBlock == 0 && scratch != nullptr &&
               w.scale != nullptr && qvariant_supported(v));
  if (M == 0) return;
  const QX qx = carve_scratch(scratch, M, Kp);
  const QW qw{w.type, static_cast<const uint8_t*>(w.data), w.scale,
              w.type == WType::Q8 ? (size_t)Kp : (size_t)Kp / 2, Kp / kQBlock};
  const int off = offset_of(w.type), tiles = (N + 3) / 4;
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int m = 0; m < M; ++m) quantize_row(qx, m, x + (size_t)m * K, K, off);
    // Columns split across threads; W tiles outermost so 4 rows of W stay in L1 while every
    // row of x passes them.
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int n0 = std::min(N, (int)((long)tiles * tid / nt) * 4);
    const int n1 = std::min(N, (int)((long)tiles * (tid + 1) / nt) * 4);
    for (int n = n0; n < n1; n += 4) {
      const int nr = std::min(4, n1 - n);
      for (int m = 0; m < M;) {
        float* o = out + (size_t)m * N + n;
        int mr = std::min(4, M - m);
        switch (v) {
#if defined(TANDEM_X86)
          case QVariant::kAvx512Vnni:
            dispatch<4>(mr, nr, [&]<int MR, int NR>() { tile_vnni<MR, NR>(o, N, qx, m, qw, n); });
            break;
          case QVariant::kAvx2:
            mr = std::min(2, mr);
            dispatch<2>(mr, nr, [&]<int MR, int NR>() { tile_avx2<MR, NR>(o, N, qx, m, qw, n); });
            break;
#endif
          default: tile_portable(o, N, qx, m, mr, qw, n, nr); break;
        }
        m += mr;
      }
    }
  }
}

}  // namespace tandem
