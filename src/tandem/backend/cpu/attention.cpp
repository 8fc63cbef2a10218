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

// attend_row for head size 16 * NV: the query and the output accumulators stay in registers;
// scores go sixteen keys at a time; the softmax uses the shared vectorized exp.
template <int NV>
float attend_row_v(float* o, float* scores, const float* q, const float* k0, const float* v0,
                   int kv_stride, int last, float scale) {
  const int n = last + 1;
  __m512 qv[NV];
  for (int c = 0; c < NV; ++c) qv[c] = _mm512_loadu_ps(q + 16 * c);
  auto qdot = [&](int j) {
    const float* k = k0 + (size_t)j * kv_stride;
    __m512 acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(k));
    for (int c = 1; c < NV; ++c) acc = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(k + 16 * c), acc);
    return acc;
  };
  const __m512 sc = _mm512_set1_ps(scale);
  __m512 mxv = _mm512_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 v[16];
    for (int s = 0; s < 16; ++s) v[s] = qdot(j + 4 * (s % 4) + s / 4);
    const __m512 r = _mm512_mul_ps(hsum16(v), sc);
    _mm512_storeu_ps(scores + j, r);
    mxv = _mm512_max_ps(mxv, r);
  }
  float mx = _mm512_reduce_max_ps(mxv);
  for (; j < n; ++j) {
    scores[j] = scale * _mm512_reduce_add_ps(qdot(j));
    mx = std::max(mx, scores[j]);
  }
  const float sum = simd::exp_shift_sum(scores, scores, n, mx);
  // Four interleaved accumulator sets (keys j mod 4) hide the FMA latency; fewer when the
  // head is wide enough to fill the pipeline alone.
  constexpr int S = NV <= 2 ? 4 : NV <= 4 ? 2 : 1;
  __m512 acc[S][NV];
  for (int t = 0; t < S; ++t)
    for (int c = 0; c < NV; ++c) acc[t][c] = _mm512_setzero_ps();
  j = 0;
  for (; j + S <= n; j += S)
    for (int t = 0; t < S; ++t) {
      const __m512 p = _mm512_set1_ps(scores[j + t]);
      const float* v = v0 + (size_t)(j + t) * kv_stride;
      for (int c = 0; c < NV; ++c) acc[t][c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16 * c), acc[t][c]);
    }
  for (; j < n; ++j) {
    const __m512 p = _mm512_set1_ps(scores[j]);
    const float* v = v0 + (size_t)j * kv_stride;
    for (int c = 0; c < NV; ++c) acc[0][c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16 * c), acc[0][c]);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / sum);
  for (int c = 0; c < NV; ++c) {
    __m512 t = acc[0][c];
    for (int u = 1; u < S; ++u) t = _mm512_add_ps(t, acc[u][c]);
    _mm512_storeu_ps(o + 16 * c, _mm512_mul_ps(t, inv));
  }
  return mx + std::log(sum);
}
#endif

// One query row against keys 0..last: writes softmax-weighted sum of values to `o` and returns
// the log-sum-exp. `scores` is scratch of at least last+1 floats.
float attend_row(float* o, float* scores, const float* q, const float* k0, const float* v0,
                 int kv_stride, int last, int D, float scale) {
#if defined(__AVX512F__)
  switch (D) {
    case 16: return attend_row_v<1>(o, scores, q, k0, v0, kv_stride, last, scale);
    case 32: return attend_row_v<2>(o, scores, q, k0, v0, kv_stride, last, scale);
    case 48: return attend_row_v<3>(o, scores, q, k0, v0, kv_stride, last, scale);
    case 64: return attend_row_v<4>(o, scores, q, k0, v0, kv_stride, last, scale);
    case 80: return attend_row_v<5>(o, scores, q, k0, v0, kv_stride, last, scale);
    case 96: return attend_row_v<6>(o, scores, q, k0, v0, kv_stride, last, scale);
    case 128: return attend_row_v<8>(o, scores, q, k0, v0, kv_stride, last, scale);
    default: break;
  }
#endif
  float mx = -INFINITY;
  for (int j = 0; j <= last; ++j) {
    scores[j] = scale * dot(q, k0 + (size_t)j * kv_stride, D);
    mx = std::max(mx, scores[j]);
  }
  const float sum = simd::exp_shift_sum(scores, scores, last + 1, mx);
  float inv = 1.0f / sum;
  for (int d = 0; d < D; ++d) o[d] = 0.f;
  for (int j = 0; j <= last; ++j) axpy(o, scores[j] * inv, v0 + (size_t)j * kv_stride, D);
  return mx + std::log(sum);
}

std::vector<float>& scratch(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
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
    blas::sgemm(false, false, rows, D, r0 + rows, 1.f, P, ldp, X, ldx, 0.f, out, ldo);
    return;
  }
  if (r0 > 0)
    blas::sgemm(false, false, rows, D, r0, 1.f, P, ldp, X, ldx, 0.f, out, ldo);
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
    blas::sgemm(true, false, cols, D, T - c0, 1.f, P + (size_t)c0 * ldp + c0, ldp,
                X + (size_t)c0 * ldx, ldx, 1.f, out, ldo);
    return;
  }
  for (int j = c0; j < c1; ++j)
    for (int t = j; t < c1; ++t)
      axpy(out + (size_t)(j - c0) * ldo, P[(size_t)t * ldp + j], X + (size_t)t * ldx, D);
  if (T > c1)
    blas::sgemm(true, false, cols, D, T - c1, 1.f, P + (size_t)c1 * ldp + c0, ldp,
                X + (size_t)c1 * ldx, ldx, 1.f, out, ldo);
}

// Training attention works per (batch, head) on whole score matrices with single-threaded
// GEMMs (threads take different heads). Rows are handled in blocks of kRowBlock so the score
// GEMMs skip most of the causally masked upper triangle.
constexpr int kRowBlock = 64;

void CpuBackend::attention_forward(float* out, float* lse, const float* qkv, const AttnShape& s) {
  const int B = s.B, T = s.T, H = s.H, D = s.D, stride = s.qkv_stride(), HD = H * D;
  const int group = H / s.Hkv;
  const float scale = 1.0f / std::sqrt((float)D);
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1) collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      float* S = scratch((size_t)T * T).data();  // (T, T) scores, then probabilities
      const float* base = qkv + (size_t)b * T * stride;
      const float* Q = base + h * D;
      const float* K = base + (H + h / group) * D;
      const float* Vv = base + (H + s.Hkv + h / group) * D;
      float* O = out + (size_t)b * T * HD + h * D;
      float* L = lse + ((size_t)b * H + h) * T;
      for (int r0 = 0; r0 < T; r0 += kRowBlock) {
        const int r1 = std::min(T, r0 + kRowBlock), rows = r1 - r0;
        // S[r0:r1, 0:r1] = scale * Q[r0:r1] K[0:r1]^T
        blas::sgemm(false, true, rows, r1, D, scale, Q + (size_t)r0 * stride, stride, K, stride,
                    0.f, S + (size_t)r0 * T, T);
        for (int t = r0; t < r1; ++t) {
          float* row = S + (size_t)t * T;
          float mx = -INFINITY;
          for (int j = 0; j <= t; ++j) mx = std::max(mx, row[j]);
          const float sum = simd::exp_shift_sum(row, row, t + 1, mx);
          const float inv = 1.0f / sum;
          for (int j = 0; j <= t; ++j) row[j] *= inv;
          for (int j = t + 1; j < r1; ++j) row[j] = 0.f;
          L[t] = mx + std::log(sum);
        }
        // O[r0:r1] = P[r0:r1, 0:r1] V[0:r1]: a GEMM below the diagonal block, and the
        // diagonal block's lower triangle row by row
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
          simd::exp_shift_sum(prow, prow, t + 1, L[t]);
          for (int j = t + 1; j < rend; ++j) prow[j] = 0.f;
          for (int j = 0; j <= t; ++j) ds[j] = prow[j] * (ds[j] - Dt) * scale;
          for (int j = t + 1; j < rend; ++j) ds[j] = 0.f;
        }
        // Column blocks: keys [c0, c1) receive gradient only from queries t >= their own.
        for (int c0 = 0; c0 < T; c0 += kRowBlock) {
          const int cols = std::min(T, c0 + kRowBlock) - c0;
          // dV[c0:c1] += P[:, c0:c1]^T dO;  dK[c0:c1] += dS[:, c0:c1]^T Q
          causal_block_product_t(dV + (size_t)c0 * stride, stride, P, T, dO, HD, c0, cols, T, D);
          causal_block_product_t(dK + (size_t)c0 * stride, stride, dP, T, Q, stride, c0, cols, T,
                                 D);
        }
        // dQ[r0:r1] = dS[r0:r1, 0:r1] K[0:r1]
        for (int r0 = 0; r0 < T; r0 += kRowBlock) {
          const int rows = std::min(T, r0 + kRowBlock) - r0;
          causal_block_product(dQ + (size_t)r0 * stride, stride, dP + (size_t)r0 * T, T, K, stride,
                               r0, rows, D);
        }
      }
    }
  }
}

void CpuBackend::attention_kv_forward(float* out, float* kcache, float* vcache, const float* qkv,
                                      const AttnShape& s, int pos0, int n) {
  const int H = s.H, Hkv = s.Hkv, D = s.D, stride = s.qkv_stride();
  const int group = H / Hkv, kvw = Hkv * D;
  const float scale = 1.0f / std::sqrt((float)D);
  for (int i = 0; i < n; ++i) {
    std::memcpy(kcache + (size_t)(pos0 + i) * kvw, qkv + (size_t)i * stride + H * D,
                sizeof(float) * kvw);
    std::memcpy(vcache + (size_t)(pos0 + i) * kvw, qkv + (size_t)i * stride + (H + Hkv) * D,
                sizeof(float) * kvw);
  }
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1) collapse(2)
  for (int i = 0; i < n; ++i) {
    for (int h = 0; h < H; ++h) {
      float* sc = scratch(pos0 + n).data();
      attend_row(out + ((size_t)i * H + h) * D, sc, qkv + (size_t)i * stride + h * D,
                 kcache + (h / group) * D, vcache + (h / group) * D, kvw, pos0 + i, D, scale);
    }
  }
}

void CpuBackend::attention_kv_batch(float* out, float* kcache, float* vcache, const float* qkv,
                                    const AttnShape& s, const KvBatch& b) {
  const int H = s.H, Hkv = s.Hkv, D = s.D, stride = s.qkv_stride();
  const int group = H / Hkv, kvw = Hkv * D;
  const float scale = 1.0f / std::sqrt((float)D);
  // Append every sequence's new keys and values, then one parallel pass over (row, head).
  std::vector<int32_t> seq_of_row;
  int longest = 0;
  for (int i = 0; i < b.count; ++i) {
    float* kc = kcache + b.slot[i] * b.slot_stride;
    float* vc = vcache + b.slot[i] * b.slot_stride;
    for (int t = 0; t < b.n[i]; ++t) {
      const float* row = qkv + (size_t)(b.row0[i] + t) * stride;
      std::memcpy(kc + (size_t)(b.pos0[i] + t) * kvw, row + H * D, sizeof(float) * kvw);
      std::memcpy(vc + (size_t)(b.pos0[i] + t) * kvw, row + (H + Hkv) * D, sizeof(float) * kvw);
    }
    longest = std::max(longest, b.pos0[i] + b.n[i]);
  }
  std::vector<int32_t> task_seq, task_t;  // tasks: one per new row, times H heads
  for (int i = 0; i < b.count; ++i)
    for (int t = 0; t < b.n[i]; ++t) {
      task_seq.push_back(i);
      task_t.push_back(t);
    }
  const int tasks = (int)task_seq.size() * H;
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1)
  for (int k = 0; k < tasks; ++k) {
    const int i = task_seq[k / H], t = task_t[k / H], h = k % H;
    float* sc = scratch(longest).data();
    const float* kc = kcache + b.slot[i] * b.slot_stride;
    const float* vc = vcache + b.slot[i] * b.slot_stride;
    const int r = b.row0[i] + t;
    attend_row(out + ((size_t)r * H + h) * D, sc, qkv + (size_t)r * stride + h * D,
               kc + (h / group) * D, vc + (h / group) * D, kvw, b.pos0[i] + t, D, scale);
  }
}

}  // namespace tandem
