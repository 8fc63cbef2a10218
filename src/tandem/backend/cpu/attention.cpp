// attention family: causal grouped-query attention over fused qkv rows. The forward keeps only
// the output and the log-sum-exp per query; the backward recomputes the probabilities (as
// flash attention does), so saved activations stay O(T) per head; scratch is O(T^2) per thread.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "tandem/backend/cpu/blas.h"
#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/backend/cpu/small_gemm.h"
#include "tandem/core/error.h"
#include "tandem/core/vexp.h"

namespace tandem {
namespace {

inline float dot(const float* a, const float* b, int n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float* y, float a, const float* x, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

// The largest of x[0..n), n >= 1. A max is exact in any order, so lanes may take it apart
// (a scalar loop is one chain of 4-cycle dependent maxima: a fifth of the forward's time).
inline float row_max(const float* x, int n) {
#if defined(__AVX512F__)
  __m512 m = _mm512_set1_ps(-INFINITY);
  int i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n)
    m = _mm512_mask_max_ps(m, (__mmask16)((1u << (n - i)) - 1), m,
                           _mm512_maskz_loadu_ps((__mmask16)((1u << (n - i)) - 1), x + i));
  return _mm512_reduce_max_ps(m);
#else
  float m = x[0];
  for (int i = 1; i < n; ++i) m = std::max(m, x[i]);
  return m;
#endif
}

constexpr int kMaxHeadsPerTask = 64;  // heads one attend_heads call may take

#if defined(__AVX512F__)
// Lane i of the result is the sum of the lanes of v[perm(i)], where the inputs were placed
// so that the result comes out in order: slot s holds item 4 * (s % 4) + s / 4. Four levels
// of shuffles and adds instead of sixteen horizontal reductions; a fixed order of additions.
inline __m512 hsum16(const __m512* v) {
  __m512 a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i)
    a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; ++i)
    b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xDD));
}

// The two ways a score over the KV cache is computed, shared by both KV paths so that a row's
// bits never depend on the path. Keys j..j+15 together (k points at key j; qh at the head's
// query): sixteen lane-wise dot products, then hsum16.
template <int NV>
inline void score_block16(float* out, const float* qh, const float* k, int kv_stride,
                          float scale) {
  __m512 qv[NV];
  for (int c = 0; c < NV; ++c) qv[c] = _mm512_loadu_ps(qh + 16 * c);
  __m512 v[16];
  for (int s = 0; s < 16; ++s) {
    const float* kk = k + (size_t)(4 * (s % 4) + s / 4) * kv_stride;
    __m512 acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kk));
    for (int c = 1; c < NV; ++c) acc = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kk + 16 * c), acc);
    v[s] = acc;
  }
  _mm512_storeu_ps(out, _mm512_mul_ps(hsum16(v), _mm512_set1_ps(scale)));
}
// One key past the last full block of sixteen.
template <int NV>
inline float score_one(const float* qh, const float* k, float scale) {
  __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qh), _mm512_loadu_ps(k));
  for (int c = 1; c < NV; ++c)
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh + 16 * c), _mm512_loadu_ps(k + 16 * c), acc);
  return scale * _mm512_reduce_add_ps(acc);
}

// Accumulator sets of the value sums for a head of 16 * NV (see attend_heads_v).
template <int NV>
constexpr int value_sets() { return NV <= 2 ? 4 : NV <= 4 ? 2 : 1; }

// Adds keys j..j1-1 (j a multiple of the set count S) into the value sums: key i into set
// i % S, in ascending order, p_i * v_i by FMA. Both KV paths run it, whatever their blocking.
template <int NV>
inline void add_values(__m512 (&acc)[value_sets<NV>()][NV], const float* sc, const float* vh,
                       int kv_stride, int j, int j1) {
  constexpr int S = value_sets<NV>();
  for (; j + S <= j1; j += S)
    for (int t = 0; t < S; ++t) {
      const __m512 p = _mm512_set1_ps(sc[j + t]);
      const float* v = vh + (size_t)(j + t) * kv_stride;
      for (int c = 0; c < NV; ++c)
        acc[t][c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16 * c), acc[t][c]);
    }
  for (int t = 0; j < j1; ++j, ++t) {
    const __m512 p = _mm512_set1_ps(sc[j]);
    const float* v = vh + (size_t)j * kv_stride;
    for (int c = 0; c < NV; ++c)
      acc[t][c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16 * c), acc[t][c]);
  }
}

// Head widths with vector kernels (both KV paths); others run attend_row.
constexpr bool vector_head_dim(int D) { return D % 16 == 0 && D >= 16 && D <= 128 && D != 112; }

// One query row against cache positions 0..last for heads [h0, h1) together. The cache rows
// (all kv heads of a position, contiguous) are walked once in blocks of 16 positions and each
// block serves every head of the range while it is in L1. Fewer, larger tasks than one per
// head: with many decoding sequences the cache comes from DRAM, and this split scaled better
// over two threads (0.37 -> 0.27 ms of attention per 16-sequence step on `small`).
// A head's result depends only on its own data, never on the range it was computed in:
// scores sixteen keys at a time (hsum16), then for the values S accumulator sets per head,
// key j feeding set j % S, summed in set order at the end.
template <int NV>
void attend_heads_v(float* o, const float* q, const float* k0, const float* v0, int kv_stride,
                    int last, float scale, int h0, int h1, int group) {
  constexpr int D = 16 * NV;
  constexpr int S = value_sets<NV>();
  const int n = last + 1, nh = h1 - h0, ns = (n + 15) / 16 * 16;
  static thread_local std::vector<float> buf;
  const size_t need = (size_t)nh * ns + (size_t)nh * S * D;
  if (buf.size() < need) buf.resize(need);
  float* scores = buf.data();                      // (nh, ns)
  float* accs = scores + (size_t)nh * ns;           // (nh, S, D)
  int j = 0;
  for (; j + 16 <= n; j += 16)
    for (int h = h0; h < h1; ++h)
      score_block16<NV>(scores + (size_t)(h - h0) * ns + j, q + (size_t)h * D,
                        k0 + (size_t)(h / group) * D + (size_t)j * kv_stride, kv_stride, scale);
  for (; j < n; ++j)
    for (int h = h0; h < h1; ++h)
      scores[(size_t)(h - h0) * ns + j] =
          score_one<NV>(q + (size_t)h * D, k0 + (size_t)(h / group) * D + (size_t)j * kv_stride,
                        scale);
  float sums[kMaxHeadsPerTask];
  for (int h = 0; h < nh; ++h) {
    float* sc = scores + (size_t)h * ns;
    sums[h] = simd::exp_shift_sum(sc, sc, n, row_max(sc, n));
  }
  std::memset(accs, 0, sizeof(float) * (size_t)nh * S * D);
  for (int j0 = 0; j0 < n; j0 += 16) {
    const int j1 = std::min(n, j0 + 16);
    for (int h = h0; h < h1; ++h) {
      const float* sc = scores + (size_t)(h - h0) * ns;
      const float* vh = v0 + (size_t)(h / group) * D;
      float* ah = accs + (size_t)(h - h0) * S * D;
      __m512 acc[S][NV];
      for (int t = 0; t < S; ++t)
        for (int c = 0; c < NV; ++c) acc[t][c] = _mm512_loadu_ps(ah + t * D + 16 * c);
      add_values<NV>(acc, sc, vh, kv_stride, j0, j1);  // j0 is a multiple of 16
      for (int t = 0; t < S; ++t)
        for (int c = 0; c < NV; ++c) _mm512_storeu_ps(ah + t * D + 16 * c, acc[t][c]);
    }
  }
  for (int h = h0; h < h1; ++h) {
    const float* ah = accs + (size_t)(h - h0) * S * D;
    const __m512 inv = _mm512_set1_ps(1.0f / sums[h - h0]);
    for (int c = 0; c < NV; ++c) {
      __m512 t = _mm512_loadu_ps(ah + 16 * c);
      for (int u = 1; u < S; ++u) t = _mm512_add_ps(t, _mm512_loadu_ps(ah + u * D + 16 * c));
      _mm512_storeu_ps(o + (size_t)h * D + 16 * c, _mm512_mul_ps(t, inv));
    }
  }
}

// Rows 0..R-1 of one sequence's prompt (row r at cache position last0 + r; its query at
// q + r * q_stride, its output at o + r * o_stride) for one head, whose keys and values start
// at kh and vh. Per row the arithmetic is attend_heads_v's for that head (the same score
// functions, the same softmax, key j into value set j % S in ascending order, the sets added
// in order), so a row gets the same bits on either path; only the loops are turned around:
// the head's keys, then its values, are read by every row of the block while they sit in L1,
// where the decode path walks all heads of one position at a time.
constexpr int kPromptRows = 16;  // rows whose scores are kept at a time
template <int NV>
void attend_rows_v(float* o, int o_stride, const float* q, int q_stride, const float* kh,
                   const float* vh, int kv_stride, int last0, int R, float scale) {
  constexpr int D = 16 * NV;
  constexpr int S = value_sets<NV>();
  const int nmax = last0 + R, ns = (nmax + 15) / 16 * 16;
  static thread_local std::vector<float> buf;
  const size_t need = (size_t)kPromptRows * ns + 2 * (size_t)nmax * D;
  if (buf.size() < need) buf.resize(need);
  // The head's keys and values, packed once: in the cache they sit a whole row of heads
  // apart, a stride that maps them onto a few L1 sets.
  float* kp = buf.data() + (size_t)kPromptRows * ns;
  float* vp = kp + (size_t)nmax * D;
  for (int j = 0; j < nmax; ++j) {
    std::memcpy(kp + (size_t)j * D, kh + (size_t)j * kv_stride, sizeof(float) * D);
    std::memcpy(vp + (size_t)j * D, vh + (size_t)j * kv_stride, sizeof(float) * D);
  }
  float sums[kPromptRows];
  for (int b0 = 0; b0 < R; b0 += kPromptRows) {
    const int b1 = std::min(R, b0 + kPromptRows);
    for (int r = b0; r < b1; ++r) {
      const int n = last0 + r + 1;
      float* sc = buf.data() + (size_t)(r - b0) * ns;
      const float* qh = q + (size_t)r * q_stride;
      int j = 0;
      for (; j + 16 <= n; j += 16) score_block16<NV>(sc + j, qh, kp + (size_t)j * D, D, scale);
      for (; j < n; ++j) sc[j] = score_one<NV>(qh, kp + (size_t)j * D, scale);
      sums[r - b0] = simd::exp_shift_sum(sc, sc, n, row_max(sc, n));
    }
    for (int r = b0; r < b1; ++r) {
      const int n = last0 + r + 1;
      const float* sc = buf.data() + (size_t)(r - b0) * ns;
      __m512 acc[S][NV];
      for (int t = 0; t < S; ++t)
        for (int c = 0; c < NV; ++c) acc[t][c] = _mm512_setzero_ps();
      add_values<NV>(acc, sc, vp, D, 0, n);
      const __m512 inv = _mm512_set1_ps(1.0f / sums[r - b0]);
      for (int c = 0; c < NV; ++c) {
        __m512 t = acc[0][c];
        for (int u = 1; u < S; ++u) t = _mm512_add_ps(t, acc[u][c]);
        _mm512_storeu_ps(o + (size_t)r * o_stride + 16 * c, _mm512_mul_ps(t, inv));
      }
    }
  }
}

// The prompt path for a head width with vector kernels (vector_head_dim).
void attend_rows(float* o, int o_stride, const float* q, int q_stride, const float* kh,
                 const float* vh, int kv_stride, int last0, int R, int D, float scale) {
  switch (D) {
    case 16: return attend_rows_v<1>(o, o_stride, q, q_stride, kh, vh, kv_stride, last0, R, scale);
    case 32: return attend_rows_v<2>(o, o_stride, q, q_stride, kh, vh, kv_stride, last0, R, scale);
    case 48: return attend_rows_v<3>(o, o_stride, q, q_stride, kh, vh, kv_stride, last0, R, scale);
    case 64: return attend_rows_v<4>(o, o_stride, q, q_stride, kh, vh, kv_stride, last0, R, scale);
    case 80: return attend_rows_v<5>(o, o_stride, q, q_stride, kh, vh, kv_stride, last0, R, scale);
    case 96: return attend_rows_v<6>(o, o_stride, q, q_stride, kh, vh, kv_stride, last0, R, scale);
    case 128: return attend_rows_v<8>(o, o_stride, q, q_stride, kh, vh, kv_stride, last0, R, scale);
    default: TANDEM_CHECK(false);
  }
}
#endif

std::vector<float>& scratch(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

// One query row against keys 0..last, one head (the portable path): writes the
// softmax-weighted sum of values to `o`. `scores` is scratch of at least last+1 floats.
void attend_row(float* o, float* scores, const float* q, const float* k0, const float* v0,
                int kv_stride, int last, int D, float scale) {
  float mx = -INFINITY;
  for (int j = 0; j <= last; ++j) {
    scores[j] = scale * dot(q, k0 + (size_t)j * kv_stride, D);
    mx = std::max(mx, scores[j]);
  }
  const float sum = simd::exp_shift_sum(scores, scores, last + 1, mx);
  float inv = 1.0f / sum;
  for (int d = 0; d < D; ++d) o[d] = 0.f;
  for (int j = 0; j <= last; ++j) axpy(o, scores[j] * inv, v0 + (size_t)j * kv_stride, D);
}

// Heads [h0, h1) of one query row (q and o point at the row's head 0; k0 and v0 at the cache's
// position 0, kv head 0) against cache positions 0..last.
void attend_heads(float* o, const float* q, const float* k0, const float* v0, int kv_stride,
                  int last, int D, float scale, int h0, int h1, int group) {
#if defined(__AVX512F__)
  switch (D) {
    case 16: return attend_heads_v<1>(o, q, k0, v0, kv_stride, last, scale, h0, h1, group);
    case 32: return attend_heads_v<2>(o, q, k0, v0, kv_stride, last, scale, h0, h1, group);
    case 48: return attend_heads_v<3>(o, q, k0, v0, kv_stride, last, scale, h0, h1, group);
    case 64: return attend_heads_v<4>(o, q, k0, v0, kv_stride, last, scale, h0, h1, group);
    case 80: return attend_heads_v<5>(o, q, k0, v0, kv_stride, last, scale, h0, h1, group);
    case 96: return attend_heads_v<6>(o, q, k0, v0, kv_stride, last, scale, h0, h1, group);
    case 128: return attend_heads_v<8>(o, q, k0, v0, kv_stride, last, scale, h0, h1, group);
    default: break;
  }
#endif
  float* sc = scratch((size_t)last + 1).data();
  for (int h = h0; h < h1; ++h)
    attend_row(o + (size_t)h * D, sc, q + (size_t)h * D, k0 + (size_t)(h / group) * D,
               v0 + (size_t)(h / group) * D, kv_stride, last, D, scale);
}

// Head ranges per query row for a parallel pass over `rows` rows: enough tasks to keep the
// threads busy when there are few rows (one decoding sequence), whole rows otherwise. The
// split never changes a head's arithmetic (attend_heads).
int heads_per_task(int rows, int H, int threads) {
  const int want = 4 * threads;  // tasks
  const int groups = std::clamp((want + rows - 1) / rows, 1, H);
  return std::min(kMaxHeadsPerTask, (H + groups - 1) / groups);
}

}  // namespace

// True when rows [r0, r0 + n) of X (D wide, row stride ldx) hold no NaN or Inf.
static bool rows_finite(const float* X, int ldx, int r0, int n, int D) {
  for (int r = r0; r < r0 + n; ++r)
    for (int d = 0; d < D; ++d)
      if (!std::isfinite(X[(size_t)r * ldx + d])) return false;
  return true;
}

// out[t] = sum over j <= r0 + t of P[t][j] * X[j] for the rows t < rows of a row block starting
// at r0 (P's masked entries are zero). When the block's own rows of X are finite this is one
// GEMM over the keys up to the block's end: the masked zeros add exact zeros. Otherwise a NaN
// or Inf there would spread through 0 * NaN to rows that must not see it, so the block's
// triangle is summed row by row, skipping the masked entries.
static void causal_block_product(float* out, int ldo, const float* P, int ldp, const float* X,
                                 int ldx, int r0, int rows, int D) {
  if (rows_finite(X, ldx, r0, rows, D)) {
    cpu::small_gemm(false, false, rows, D, r0 + rows, 1.f, P, ldp, X, ldx, 0.f, out, ldo);
    return;
  }
  if (r0 > 0)
    cpu::small_gemm(false, false, rows, D, r0, 1.f, P, ldp, X, ldx, 0.f, out, ldo);
  else
    for (int t = 0; t < rows; ++t) std::memset(out + (size_t)t * ldo, 0, sizeof(float) * D);
  for (int t = 0; t < rows; ++t)
    for (int j = r0; j <= r0 + t; ++j)
      axpy(out + (size_t)t * ldo, P[(size_t)t * ldp + j], X + (size_t)j * ldx, D);
}

// The transposed form for the key gradients: out[j] += sum over t >= j of P[t][j] * X[t] for the
// keys j of a column block [c0, c0 + cols), over the rows t < T; the same rule for non-finite
// rows of X inside the block.
static void causal_block_product_t(float* out, int ldo, const float* P, int ldp, const float* X,
                                   int ldx, int c0, int cols, int T, int D) {
  const int c1 = c0 + cols;
  if (rows_finite(X, ldx, c0, cols, D)) {
    cpu::small_gemm(true, false, cols, D, T - c0, 1.f, P + (size_t)c0 * ldp + c0, ldp,
                    X + (size_t)c0 * ldx, ldx, 1.f, out, ldo);
    return;
  }
  for (int j = c0; j < c1; ++j)
    for (int t = j; t < c1; ++t)
      axpy(out + (size_t)(j - c0) * ldo, P[(size_t)t * ldp + j], X + (size_t)t * ldx, D);
  if (T > c1)
    cpu::small_gemm(true, false, cols, D, T - c1, 1.f, P + (size_t)c1 * ldp + c0, ldp,
                    X + (size_t)c1 * ldx, ldx, 1.f, out, ldo);
}

// Packed rows (AttnShape::doc_start; lo[t] = the start of query t's document, non-decreasing):
// out[t] = sum over j in [lo[t], t] of P[t][j] X[j]. One GEMM over the keys from the block's
// first document start when those rows of X are finite (masked P entries are zeros), else row
// by row over each query's own keys only, so a non-finite value never crosses documents.
static void doc_block_product(float* out, int ldo, const float* P, int ldp, const float* X,
                              int ldx, int r0, int rows, int D, const int32_t* lo) {
  const int k0 = lo[r0], k = r0 + rows - k0;
  if (rows_finite(X, ldx, k0, k, D)) {
    cpu::small_gemm(false, false, rows, D, k, 1.f, P + k0, ldp, X + (size_t)k0 * ldx, ldx, 0.f, out,
                    ldo);
    return;
  }
  for (int t = 0; t < rows; ++t) {
    std::memset(out + (size_t)t * ldo, 0, sizeof(float) * D);
    for (int j = lo[r0 + t]; j <= r0 + t; ++j)
      axpy(out + (size_t)t * ldo, P[(size_t)t * ldp + j], X + (size_t)j * ldx, D);
  }
}

// The transposed form: out[j] += sum over the queries t that see key j (t >= j, same document)
// of P[t][j] X[t], for the keys of a column block [c0, c0 + cols).
static void doc_block_product_t(float* out, int ldo, const float* P, int ldp, const float* X,
                                int ldx, int c0, int cols, int T, int D, const int32_t* lo) {
  const int c1 = c0 + cols;
  int end = c1;  // queries past the end of the last key's document see none of the block
  while (end < T && lo[end] <= c1 - 1) ++end;
  if (rows_finite(X, ldx, c0, end - c0, D)) {
    cpu::small_gemm(true, false, cols, D, end - c0, 1.f, P + (size_t)c0 * ldp + c0, ldp,
                    X + (size_t)c0 * ldx, ldx, 1.f, out, ldo);
    return;
  }
  for (int j = c0; j < c1; ++j)
    for (int t = j; t < end && lo[t] <= j; ++t)
      axpy(out + (size_t)(j - c0) * ldo, P[(size_t)t * ldp + j], X + (size_t)t * ldx, D);
}

// Training attention works per (batch, head) on whole score matrices with single-threaded
// GEMMs (threads take different heads): small_gemm's register tiles, which measured 15-25 %
// faster than OpenBLAS on these 64-row blocks (no per-call packing of the blocks). Rows are
// handled in blocks of kRowBlock so the score GEMMs skip most of the causally masked upper
// triangle. The forward's scores read the head's keys transposed (once per head, not once
// per block).
constexpr int kRowBlock = 64;

void CpuBackend::attention_forward(float* out, float* lse, const float* qkv, const AttnShape& s) {
  const int B = s.B, T = s.T, H = s.H, D = s.D, stride = s.qkv_stride(), HD = H * D;
  const int group = H / s.Hkv;
  const float scale = 1.0f / std::sqrt((float)D);
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1) collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      float* S =
          scratch((size_t)T * T + (size_t)D * T).data();  // (T, T) scores, then probabilities
      float* KT = S + (size_t)T * T;                      // (D, T) keys, transposed
      const float* base = qkv + (size_t)b * T * stride;
      const float* Q = base + h * D;
      const float* K = base + (H + h / group) * D;
      const float* Vv = base + (H + s.Hkv + h / group) * D;
      float* O = out + (size_t)b * T * HD + h * D;
      float* L = lse + ((size_t)b * H + h) * T;
      const int32_t* lo = s.doc_start ? s.doc_start + (size_t)b * T : nullptr;
      cpu::transpose(KT, T, K, stride, T, D);
      for (int r0 = 0; r0 < T; r0 += kRowBlock) {
        const int r1 = std::min(T, r0 + kRowBlock), rows = r1 - r0;
        // S[r0:r1, 0:r1] = scale * Q[r0:r1] K[0:r1]^T
        cpu::small_gemm(false, false, rows, r1, D, scale, Q + (size_t)r0 * stride, stride, KT, T,
                        0.f, S + (size_t)r0 * T, T);
        for (int t = r0; t < r1; ++t) {
          float* row = S + (size_t)t * T;
          const int l0 = lo ? lo[t] : 0;  // keys before the document's start are masked
          const float mx = row_max(row + l0, t + 1 - l0);
          const float sum = simd::exp_shift_sum(row + l0, row + l0, t + 1 - l0, mx);
          const float inv = 1.0f / sum;
          for (int j = l0; j <= t; ++j) row[j] *= inv;
          for (int j = 0; j < l0; ++j) row[j] = 0.f;
          for (int j = t + 1; j < r1; ++j) row[j] = 0.f;
          L[t] = mx + std::log(sum);
        }
        // O[r0:r1] = P[r0:r1, 0:r1] V[0:r1]: a GEMM below the diagonal block, and the
        // diagonal block's lower triangle row by row
        if (lo)
          doc_block_product(O + (size_t)r0 * HD, HD, S + (size_t)r0 * T, T, Vv, stride, r0, rows,
                            D, lo);
        else
          causal_block_product(O + (size_t)r0 * HD, HD, S + (size_t)r0 * T, T, Vv, stride, r0,
                               rows, D);
      }
    }
  }
}

void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                    const float* out, const float* lse, const AttnShape& s) {
  const int B = s.B, T = s.T, H = s.H, Hkv = s.Hkv, D = s.D, stride = s.qkv_stride();
  const int HD = H * D, group = H / Hkv;
  const float scale = 1.0f / std::sqrt((float)D);
  // A thread owns one (batch, kv head): it writes dk, dv of that head and dq of its query
  // heads, so no two threads touch the same gradient and the sum order is fixed.
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1) collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int kh = 0; kh < Hkv; ++kh) {
      float* P = scratch((size_t)2 * T * T).data();  // probabilities, then dS
      float* dP = P + (size_t)T * T;
      const float* base = qkv + (size_t)b * T * stride;
      float* dbase = dqkv + (size_t)b * T * stride;
      const float* K = base + (H + kh) * D;
      const float* Vv = base + (H + Hkv + kh) * D;
      float* dK = dbase + (H + kh) * D;
      float* dV = dbase + (H + Hkv + kh) * D;
      const int32_t* lo = s.doc_start ? s.doc_start + (size_t)b * T : nullptr;
      for (int t = 0; t < T; ++t) {
        std::memset(dK + (size_t)t * stride, 0, sizeof(float) * D);
        std::memset(dV + (size_t)t * stride, 0, sizeof(float) * D);
      }
      for (int h = kh * group; h < (kh + 1) * group; ++h) {
        const float* Q = base + h * D;
        const float* dO = dout + (size_t)b * T * HD + h * D;
        const float* O = out + (size_t)b * T * HD + h * D;
        const float* L = lse + ((size_t)b * H + h) * T;
        float* dQ = dbase + h * D;
        // P = exp(scale * Q K^T - lse), causal; dP = dO V^T (row blocks skip the masked part)
        for (int r0 = 0; r0 < T; r0 += kRowBlock) {
          const int r1 = std::min(T, r0 + kRowBlock), rows = r1 - r0;
          // The two score products stay on OpenBLAS: on small_gemm they round differently,
          // and the reasoning pipeline's outcome (scripts/reason_pipeline.sh) turned out to
          // depend on such rounding (see docs/cpu.md).
          blas::sgemm(false, true, rows, r1, D, scale, Q + (size_t)r0 * stride, stride, K, stride,
                      0.f, P + (size_t)r0 * T, T);
          blas::sgemm(false, true, rows, r1, D, 1.f, dO + (size_t)r0 * HD, HD, Vv, stride, 0.f,
                      dP + (size_t)r0 * T, T);
        }
        for (int t = 0; t < T; ++t) {
          float* prow = P + (size_t)t * T;
          float* ds = dP + (size_t)t * T;  // dP row, overwritten in place by dS
          const int rend = std::min(T, (t / kRowBlock + 1) * kRowBlock);
          const float Dt = dot(dO + (size_t)t * HD, O + (size_t)t * HD, D);
          const int l0 = lo ? lo[t] : 0;
          simd::exp_shift_sum(prow + l0, prow + l0, t + 1 - l0, L[t]);
          for (int j = 0; j < l0; ++j) prow[j] = ds[j] = 0.f;
          for (int j = t + 1; j < rend; ++j) prow[j] = 0.f;
          for (int j = l0; j <= t; ++j) ds[j] = prow[j] * (ds[j] - Dt) * scale;
          for (int j = t + 1; j < rend; ++j) ds[j] = 0.f;
        }
        // Column blocks: keys [c0, c1) receive gradient only from queries t >= their own.
        for (int c0 = 0; c0 < T; c0 += kRowBlock) {
          const int cols = std::min(T, c0 + kRowBlock) - c0;
          // dV[c0:c1] += P[:, c0:c1]^T dO;  dK[c0:c1] += dS[:, c0:c1]^T Q
          if (lo) {
            doc_block_product_t(dV + (size_t)c0 * stride, stride, P, T, dO, HD, c0, cols, T, D, lo);
            doc_block_product_t(dK + (size_t)c0 * stride, stride, dP, T, Q, stride, c0, cols, T, D,
                                lo);
            continue;
          }
          causal_block_product_t(dV + (size_t)c0 * stride, stride, P, T, dO, HD, c0, cols, T, D);
          causal_block_product_t(dK + (size_t)c0 * stride, stride, dP, T, Q, stride, c0, cols, T,
                                 D);
        }
        // dQ[r0:r1] = dS[r0:r1, 0:r1] K[0:r1]
        for (int r0 = 0; r0 < T; r0 += kRowBlock) {
          const int rows = std::min(T, r0 + kRowBlock) - r0;
          if (lo)
            doc_block_product(dQ + (size_t)r0 * stride, stride, dP + (size_t)r0 * T, T, K, stride,
                              r0, rows, D, lo);
          else
            causal_block_product(dQ + (size_t)r0 * stride, stride, dP + (size_t)r0 * T, T, K,
                                 stride, r0, rows, D);
        }
      }
    }
  }
}

void CpuBackend::attention_kv_forward(float* out, float* kcache, float* vcache, const float* qkv,
                                      const AttnShape& s, int pos0, int n) {
  const int32_t slot = 0, row0 = 0;
  const KvBatch b{&slot, &pos0, &n, &row0, 1, 0};
  attention_kv_batch(out, kcache, vcache, qkv, s, b);
}

void CpuBackend::attention_kv_batch(float* out, float* kcache, float* vcache, const float* qkv,
                                    const AttnShape& s, const KvBatch& b) {
  const int H = s.H, Hkv = s.Hkv, D = s.D, stride = s.qkv_stride();
  const int group = H / Hkv, kvw = Hkv * D;
  const float scale = 1.0f / std::sqrt((float)D);
  // Append every sequence's new keys and values, then one parallel pass over the tasks: for a
  // prompt (kPromptRows new rows or more), one head of all its rows (attend_rows);
  // otherwise a row and a range of its heads (attend_heads). Both give a row the same bits.
  struct Task {
    int seq, t0, rows, h0, h1;  // rows > 0: prompt rows t0..t0+rows-1 of head h0 (= h1 - 1)
  };
  std::vector<Task> tasks;
  std::vector<std::pair<int, int>> single;  // (sequence, row) for attend_heads
  for (int i = 0; i < b.count; ++i) {
    float* kc = kcache + b.slot[i] * b.slot_stride;
    float* vc = vcache + b.slot[i] * b.slot_stride;
    for (int t = 0; t < b.n[i]; ++t) {
      const float* row = qkv + (size_t)(b.row0[i] + t) * stride;
      std::memcpy(kc + (size_t)(b.pos0[i] + t) * kvw, row + H * D, sizeof(float) * kvw);
      std::memcpy(vc + (size_t)(b.pos0[i] + t) * kvw, row + (H + Hkv) * D, sizeof(float) * kvw);
    }
#if defined(__AVX512F__)
    const bool prompt = b.n[i] >= kPromptRows && vector_head_dim(D);
#else
    const bool prompt = false;
#endif
    if (prompt) {
      for (int h = 0; h < H; ++h) tasks.push_back({i, 0, b.n[i], h, h + 1});
    } else {
      for (int t = 0; t < b.n[i]; ++t) single.push_back({i, t});
    }
  }
  if (!single.empty()) {
    const int hpt = heads_per_task((int)single.size(), H, threads_), per_row = (H + hpt - 1) / hpt;
    for (const auto& [i, t] : single)
      for (int k = 0; k < per_row; ++k)
        tasks.push_back({i, t, 0, k * hpt, std::min(H, (k + 1) * hpt)});
  }
  const int ntasks = (int)tasks.size();
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1) if (ntasks > 1)
  for (int k = 0; k < ntasks; ++k) {
    const Task& tk = tasks[k];
    const int i = tk.seq, r = b.row0[i] + tk.t0;
    const float* kc = kcache + b.slot[i] * b.slot_stride;
    const float* vc = vcache + b.slot[i] * b.slot_stride;
#if defined(__AVX512F__)
    if (tk.rows > 0) {
      const int kvh = tk.h0 / group;
      attend_rows(out + (size_t)r * H * D + (size_t)tk.h0 * D, H * D,
                  qkv + (size_t)r * stride + (size_t)tk.h0 * D, stride, kc + (size_t)kvh * D,
                  vc + (size_t)kvh * D, kvw, b.pos0[i] + tk.t0, tk.rows, D, scale);
      continue;
    }
#endif
    attend_heads(out + (size_t)r * H * D, qkv + (size_t)r * stride, kc, vc, kvw,
                 b.pos0[i] + tk.t0, D, scale, tk.h0, tk.h1, group);
  }
}

}  // namespace tandem
