// CUDA backend: causal grouped-query attention, flash-style. One warp owns one query row: it
// walks the keys 32 at a time with an online softmax (running max and sum), so no T x T score
// matrix is ever stored; the backward recomputes probabilities from the saved log-sum-exp.
// dQ is gathered per query and dK/dV per key (looping over the queries that see it), so no
// gradient is accumulated with atomics and every result is bit-stable.
#include <algorithm>
#include <vector>

#include "tandem/backend/cuda/cuda_impl.h"
#include "tandem/core/error.h"

namespace tandem::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxPerLane = 8;  // head dimension up to 256
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
__device__ __forceinline__ float dot(const float* a, const float* b, int D) {
  float s = 0.f;
  for (int d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}
// a · b over D with the lanes splitting d, then a fixed butterfly.
__device__ __forceinline__ float warp_dot(const float* a, const float* b, int D) {
  float s = 0.f;
  for (int d = threadIdx.x % 32; d < D; d += 32) s += a[d] * b[d];
  return warp_sum(s);
}

// Softmax-weighted sum over keys 0..n-1 (key j at k0 + j * ks, value at v0 + j * ks) for one
// query; the warp writes o (D) and returns the log-sum-exp.
__device__ float warp_attend(float* o, const float* q, const float* k0, const float* v0,
                             size_t ks, int n, int D, float scale) {
  const int lane = threadIdx.x % 32;
  float acc[kMaxPerLane];
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) acc[c] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int j0 = 0; j0 < n; j0 += 32) {
    const int j = j0 + lane;
    const float s = j < n ? scale * dot(q, k0 + (size_t)j * ks, D) : -INFINITY;
    const float m_new = fmaxf(m, warp_max(s));
    const float p = j < n ? expf(s - m_new) : 0.f;
    const float corr = expf(m - m_new);
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int c = 0; c < kMaxPerLane; ++c) acc[c] *= corr;
    const int cnt = min(32, n - j0);
    for (int jj = 0; jj < cnt; ++jj) {
      const float pj = __shfl_sync(kFull, p, jj);
      const float* v = v0 + (size_t)(j0 + jj) * ks;
#pragma unroll
      for (int c = 0; c < kMaxPerLane; ++c) {
        const int d = lane + 32 * c;
        if (d < D) acc[c] += pj * v[d];
      }
    }
    m = m_new;
  }
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int d = lane + 32 * c;
    if (d < D) o[d] = acc[c] / l;
  }
  return m + logf(l);
}

__device__ __forceinline__ int warp_id() {
  return (blockIdx.x * blockDim.x + threadIdx.x) / 32;
}

__global__ void k_attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H,
                                    int Hkv, int D, float scale) {
  const int w = warp_id();
  if (w >= B * H * T) return;
  const int t = w % T, h = (w / T) % H, b = w / (T * H), g = h / (H / Hkv);
  const int stride = (H + 2 * Hkv) * D;
  const float* base = qkv + (size_t)b * T * stride;
  const float* q = base + (size_t)t * stride + h * D;
  const float* k0 = base + H * D + g * D;
  const float l = warp_attend(out + ((size_t)(b * T + t) * H + h) * D, q, k0, k0 + Hkv * D, stride,
                              t + 1, D, scale);
  if (threadIdx.x % 32 == 0) lse[((size_t)b * H + h) * T + t] = l;
}

// dQ of query (b, h, i): sum over keys j <= i of P_ij (dP_ij - D_i) K_j, times the scale.
__global__ void k_attention_dq(float* dqkv, const float* dout, const float* qkv, const float* out,
                               const float* lse, int B, int T, int H, int Hkv, int D,
                               float scale) {
  const int w = warp_id();
  if (w >= B * H * T) return;
  const int lane = threadIdx.x % 32;
  const int i = w % T, h = (w / T) % H, b = w / (T * H), g = h / (H / Hkv);
  const int stride = (H + 2 * Hkv) * D;
  const float* base = qkv + (size_t)b * T * stride;
  const float* q = base + (size_t)i * stride + h * D;
  const float* dO = dout + ((size_t)(b * T + i) * H + h) * D;
  const float Di = warp_dot(dO, out + ((size_t)(b * T + i) * H + h) * D, D);
  const float L = lse[((size_t)b * H + h) * T + i];
  float acc[kMaxPerLane];
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) acc[c] = 0.f;
  for (int j0 = 0; j0 <= i; j0 += 32) {
    const int j = j0 + lane;
    float ds = 0.f;
    if (j <= i) {
      const float* k = base + (size_t)j * stride + H * D + g * D;
      const float p = expf(scale * dot(q, k, D) - L);
      ds = p * (dot(dO, k + Hkv * D, D) - Di);
    }
    const int cnt = min(32, i + 1 - j0);
    for (int jj = 0; jj < cnt; ++jj) {
      const float dsj = __shfl_sync(kFull, ds, jj);
      const float* k = base + (size_t)(j0 + jj) * stride + H * D + g * D;
#pragma unroll
      for (int c = 0; c < kMaxPerLane; ++c) {
        const int d = lane + 32 * c;
        if (d < D) acc[c] += dsj * k[d];
      }
    }
  }
  float* dq = dqkv + (size_t)(b * T + i) * stride + h * D;
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int d = lane + 32 * c;
    if (d < D) dq[d] = acc[c] * scale;
  }
}

// dK and dV of key (b, g, j): sums over the heads of group g and the queries i >= j.
__global__ void k_attention_dkv(float* dqkv, const float* dout, const float* qkv, const float* out,
                                const float* lse, int B, int T, int H, int Hkv, int D,
                                float scale) {
  const int w = warp_id();
  if (w >= B * Hkv * T) return;
  const int lane = threadIdx.x % 32;
  const int j = w % T, g = (w / T) % Hkv, b = w / (T * Hkv), group = H / Hkv;
  const int stride = (H + 2 * Hkv) * D;
  const float* base = qkv + (size_t)b * T * stride;
  const float* k = base + (size_t)j * stride + H * D + g * D;
  const float* v = k + Hkv * D;
  float dk[kMaxPerLane], dv[kMaxPerLane];
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) dk[c] = dv[c] = 0.f;
  for (int h = g * group; h < (g + 1) * group; ++h) {
    for (int i0 = j; i0 < T; i0 += 32) {
      const int i = i0 + lane;
      float p = 0.f, ds = 0.f;
      if (i < T) {
        const float* q = base + (size_t)i * stride + h * D;
        const size_t row = ((size_t)(b * T + i) * H + h) * D;
        p = expf(scale * dot(q, k, D) - lse[((size_t)b * H + h) * T + i]);
        ds = p * (dot(dout + row, v, D) - dot(dout + row, out + row, D));
      }
      const int cnt = min(32, T - i0);
      for (int ii = 0; ii < cnt; ++ii) {
        const float pi = __shfl_sync(kFull, p, ii), dsi = __shfl_sync(kFull, ds, ii);
        const float* q = base + (size_t)(i0 + ii) * stride + h * D;
        const float* dO = dout + ((size_t)(b * T + i0 + ii) * H + h) * D;
#pragma unroll
        for (int c = 0; c < kMaxPerLane; ++c) {
          const int d = lane + 32 * c;
          if (d < D) {
            dv[c] += pi * dO[d];
            dk[c] += dsi * q[d];
          }
        }
      }
    }
  }
  float* dkp = dqkv + (size_t)(b * T + j) * stride + H * D + g * D;
  float* dvp = dkp + Hkv * D;
#pragma unroll
  for (int c = 0; c < kMaxPerLane; ++c) {
    const int d = lane + 32 * c;
    if (d < D) {
      dkp[d] = dk[c] * scale;
      dvp[d] = dv[c];
    }
  }
}

// Copies the new rows' k and v into their cache slots: row r goes to slot[r] at pos[r]
// (a single sequence: slot 0 and pos0 + r).
__global__ void k_kv_append(float* kcache, float* vcache, const float* qkv, int rows, int H,
                            int Hkv, int D, const int32_t* slot, const int32_t* pos, int pos0,
                            size_t slot_stride) {
  const int kvw = Hkv * D, stride = (H + 2 * Hkv) * D;
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)rows * kvw) return;
  const int r = (int)(i / kvw), e = (int)(i % kvw);
  if (slot && slot[r] < 0) return;
  const size_t at = (slot ? (size_t)slot[r] * slot_stride : 0) +
                    (size_t)(pos ? pos[r] : pos0 + r) * kvw + e;
  kcache[at] = qkv[(size_t)r * stride + H * D + e];
  vcache[at] = qkv[(size_t)r * stride + (H + Hkv) * D + e];
}

__global__ void k_kv_attend(float* out, const float* kcache, const float* vcache,
                            const float* qkv, int rows, int H, int Hkv, int D,
                            const int32_t* slot, const int32_t* pos, int pos0,
                            size_t slot_stride, float scale) {
  const int w = warp_id();
  if (w >= rows * H) return;
  const int r = w / H, h = w % H, g = h / (H / Hkv), kvw = Hkv * D;
  if (slot && slot[r] < 0) return;
  const size_t base = slot ? (size_t)slot[r] * slot_stride : 0;
  const int n = (pos ? pos[r] : pos0 + r) + 1;
  warp_attend(out + ((size_t)r * H + h) * D, qkv + (size_t)r * (H + 2 * Hkv) * D + h * D,
              kcache + base + g * D, vcache + base + g * D, kvw, n, D, scale);
}

unsigned warp_blocks(size_t warps) { return blocks_for(warps * 32, 32 * kWarpsPerBlock); }

}  // namespace

void CudaBackend::attention_forward(float* out, float* lse, const float* qkv, const AttnShape& s) {
  TANDEM_CHECK(s.D <= 32 * kMaxPerLane && s.H % s.Hkv == 0);
  const size_t warps = (size_t)s.B * s.H * s.T;
  if (warps == 0) return;
  k_attention_forward<<<warp_blocks(warps), 32 * kWarpsPerBlock>>>(
      out, lse, qkv, s.B, s.T, s.H, s.Hkv, s.D, 1.0f / sqrtf((float)s.D));
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                     const float* out, const float* lse, const AttnShape& s) {
  TANDEM_CHECK(s.D <= 32 * kMaxPerLane && s.H % s.Hkv == 0);
  if ((size_t)s.B * s.T == 0) return;
  const float scale = 1.0f / sqrtf((float)s.D);
  k_attention_dq<<<warp_blocks((size_t)s.B * s.H * s.T), 32 * kWarpsPerBlock>>>(
      dqkv, dout, qkv, out, lse, s.B, s.T, s.H, s.Hkv, s.D, scale);
  TANDEM_CU_LAUNCHED();
  k_attention_dkv<<<warp_blocks((size_t)s.B * s.Hkv * s.T), 32 * kWarpsPerBlock>>>(
      dqkv, dout, qkv, out, lse, s.B, s.T, s.H, s.Hkv, s.D, scale);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::attention_kv_forward(float* out, float* kcache, float* vcache, const float* qkv,
                                       const AttnShape& s, int pos0, int n) {
  TANDEM_CHECK(s.D <= 32 * kMaxPerLane && s.H % s.Hkv == 0);
  if (n == 0) return;
  const size_t cells = (size_t)n * s.Hkv * s.D;
  k_kv_append<<<blocks_for(cells, 256), 256>>>(kcache, vcache, qkv, n, s.H, s.Hkv, s.D, nullptr,
                                               nullptr, pos0, 0);
  TANDEM_CU_LAUNCHED();
  k_kv_attend<<<warp_blocks((size_t)n * s.H), 32 * kWarpsPerBlock>>>(
      out, kcache, vcache, qkv, n, s.H, s.Hkv, s.D, nullptr, nullptr, pos0, 0,
      1.0f / sqrtf((float)s.D));
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::attention_kv_batch(float* out, float* kcache, float* vcache, const float* qkv,
                                     const AttnShape& s, const KvBatch& b) {
  TANDEM_CHECK(s.D <= 32 * kMaxPerLane && s.H % s.Hkv == 0);
  int rows = 0;
  for (int i = 0; i < b.count; ++i) rows = std::max(rows, b.row0[i] + b.n[i]);
  if (rows == 0) return;
  // Per row: its sequence's slot (or -1 for a row no sequence owns) and its position.
  std::vector<int32_t> meta(2 * (size_t)rows, -1);
  for (int i = 0; i < b.count; ++i)
    for (int t = 0; t < b.n[i]; ++t) {
      meta[b.row0[i] + t] = b.slot[i];
      meta[rows + b.row0[i] + t] = b.pos0[i] + t;
    }
  const int32_t* d = upload_meta(meta.data(), meta.size());
  const size_t cells = (size_t)rows * s.Hkv * s.D;
  k_kv_append<<<blocks_for(cells, 256), 256>>>(kcache, vcache, qkv, rows, s.H, s.Hkv, s.D, d,
                                               d + rows, 0, b.slot_stride);
  TANDEM_CU_LAUNCHED();
  k_kv_attend<<<warp_blocks((size_t)rows * s.H), 32 * kWarpsPerBlock>>>(
      out, kcache, vcache, qkv, rows, s.H, s.Hkv, s.D, d, d + rows, 0, b.slot_stride,
      1.0f / sqrtf((float)s.D));
  TANDEM_CU_LAUNCHED();
}

}  // namespace tandem::cuda
