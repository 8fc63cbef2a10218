// Vectorized exp on the host (CPU softmax, cross-entropy and SiLU kernels; sampling):
// Cody-Waite range reduction and a degree-6 polynomial, within ~2 ulp of expf over the range softmax uses.
// One algorithm serves the AVX-512, AVX2 and scalar paths, so results do not depend on which
// lanes an element lands in.
#pragma once

// GCC 12 reports its own AVX-512 intrinsics' "undefined" placeholders as maybe-uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

namespace tandem::simd {

namespace vexp_detail {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kMax = 88.3762626647949f;
constexpr float kMin = -87.3365478515625f;  // below: exp underflows, return 0
constexpr float kC[7] = {1.0f, 1.0f, 0.5f, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720};
}  // namespace vexp_detail

inline float exp_scalar(float x) {
  using namespace vexp_detail;
  if (x < kMin) return 0.0f;
  if (x > kMax) x = kMax;
  float n = std::nearbyint(x * kLog2e);
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float p = kC[6];
  for (int i = 5; i >= 0; --i) p = std::fma(p, r, kC[i]);
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

#if defined(__AVX512F__)
inline __m512 exp16(__m512 x) {
  using namespace vexp_detail;
  __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kMin), _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_set1_ps(kMax), x);  // this operand order keeps a NaN a NaN
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Hi), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kC[6]);
  for (int i = 5; i >= 0; --i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC[i]));
  __m512i e =
      _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  __m512 res = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  return _mm512_mask_mov_ps(res, under, _mm512_setzero_ps());
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
inline __m256 exp8(__m256 x) {
  using namespace vexp_detail;
  __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(kMin), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(kMax), x);  // this operand order keeps a NaN a NaN
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kC[6]);
  for (int i = 5; i >= 0; --i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[i]));
  __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 res = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(under, res);
}
#endif

// y[i] = exp(x[i] - shift); returns the sum of y in a fixed order (lane-wise partial sums
// combined in lane order, then the tail in order). y may alias x.
inline float exp_shift_sum(float* y, const float* x, int n, float shift) {
  int i = 0;
  float total = 0.f;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  const __m512 s = _mm512_set1_ps(shift);
  for (; i + 16 <= n; i += 16) {
    __m512 v = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
    _mm512_storeu_ps(y + i, v);
    acc = _mm512_add_ps(acc, v);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc);
  for (float l : lanes) total += l;
  if (i < n) {
    // The tail's exponentials in masked lanes (exp16 gives exp_scalar's values: a scalar exp
    // per element cost more than the rest of a short row), added in order as before.
    const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s)));
    for (; i < n; ++i) total += y[i];
  }
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc = _mm256_setzero_ps();
  const __m256 s = _mm256_set1_ps(shift);
  for (; i + 8 <= n; i += 8) {
    __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    _mm256_storeu_ps(y + i, v);
    acc = _mm256_add_ps(acc, v);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  for (float l : lanes) total += l;
#endif
  for (; i < n; ++i) {
    y[i] = exp_scalar(x[i] - shift);
    total += y[i];
  }
  return total;
}

// y[i] = exp(x[i]) with no reduction.
inline void exp_inplace(float* x, int n) {
  int i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, exp16(_mm512_loadu_ps(x + i)));
#elif defined(__AVX2__) && defined(__FMA__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
#endif
  for (; i < n; ++i) x[i] = exp_scalar(x[i]);
}

}  // namespace tandem::simd

#pragma GCC diagnostic pop
