// attention family: causal grouped-query attention over fused qkv rows. The forward keeps only
// the output and the log-sum-exp per query; the backward recomputes the probabilities (as
// flash attention does), so memory stays O(T) per head instead of O(T^2).
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "tandem/backend/cpu/cpu_backend.h"

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

// One query row against keys 0..last: writes softmax-weighted sum of values to `o` and returns
// the log-sum-exp. `scores` is scratch of at least last+1 floats.
float attend_row(float* o, float* scores, const float* q, const float* k0, const float* v0,
                 int kv_stride, int last, int D, float scale) {
  float mx = -INFINITY;
  for (int j = 0; j <= last; ++j) {
    scores[j] = scale * dot(q, k0 + (size_t)j * kv_stride, D);
    mx = std::max(mx, scores[j]);
  }
  float sum = 0.f;
  for (int j = 0; j <= last; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
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

void CpuBackend::attention_forward(float* out, float* lse, const float* qkv, const AttnShape& s) {
  const int B = s.B, T = s.T, H = s.H, D = s.D, stride = s.qkv_stride();
  const int group = H / s.Hkv;
  const float scale = 1.0f / std::sqrt((float)D);
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1) collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      float* sc = scratch(T).data();
      const float* base = qkv + (size_t)b * T * stride;
      const float* k0 = base + (H + h / group) * D;
      const float* v0 = base + (H + s.Hkv + h / group) * D;
      for (int t = 0; t < T; ++t) {
        lse[((size_t)b * H + h) * T + t] =
            attend_row(out + ((size_t)b * T + t) * H * D + h * D, sc,
                       base + (size_t)t * stride + h * D, k0, v0, stride, t, D, scale);
      }
    }
  }
}

void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                    const float* out, const float* lse, const AttnShape& s) {
  const int B = s.B, T = s.T, H = s.H, Hkv = s.Hkv, D = s.D, stride = s.qkv_stride();
  const int group = H / Hkv;
  const float scale = 1.0f / std::sqrt((float)D);
  // A thread owns one (batch, kv head): it writes dk, dv of that head and dq of its query
  // heads, so no two threads touch the same gradient and the sum order is fixed.
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1) collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int kh = 0; kh < Hkv; ++kh) {
      float* dp = scratch(T).data();
      const float* base = qkv + (size_t)b * T * stride;
      float* dbase = dqkv + (size_t)b * T * stride;
      const float* k0 = base + (H + kh) * D;
      const float* v0 = base + (H + Hkv + kh) * D;
      float* dk0 = dbase + (H + kh) * D;
      float* dv0 = dbase + (H + Hkv + kh) * D;
      for (int t = 0; t < T; ++t) {
        std::memset(dk0 + (size_t)t * stride, 0, sizeof(float) * D);
        std::memset(dv0 + (size_t)t * stride, 0, sizeof(float) * D);
      }
      for (int h = kh * group; h < (kh + 1) * group; ++h) {
        for (int t = 0; t < T; ++t) {
          const float* q = base + (size_t)t * stride + h * D;
          const float* go = dout + ((size_t)b * T + t) * H * D + h * D;
          const float* o = out + ((size_t)b * T + t) * H * D + h * D;
          float* dq = dbase + (size_t)t * stride + h * D;
          float l = lse[((size_t)b * H + h) * T + t];
          float Dt = dot(go, o, D);
          for (int d = 0; d < D; ++d) dq[d] = 0.f;
          for (int j = 0; j <= t; ++j) {
            float p = std::exp(scale * dot(q, k0 + (size_t)j * stride, D) - l);
            float dpj = dot(go, v0 + (size_t)j * stride, D);
            axpy(dv0 + (size_t)j * stride, p, go, D);
            dp[j] = p * (dpj - Dt) * scale;  // gradient wrt the raw dot product
          }
          for (int j = 0; j <= t; ++j) {
            axpy(dq, dp[j], k0 + (size_t)j * stride, D);
            axpy(dk0 + (size_t)j * stride, dp[j], q, D);
          }
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

}  // namespace tandem
