// CUDA backend: causal grouped-query attention, flash-style: no T x T score matrix is ever
// stored, and the backward recomputes probabilities from the saved log-sum-exp. Head
// dimensions that are multiples of 16 (up to 128) run tiled kernels (64 x 64 score tiles in
// shared memory); others, and the KV-cache kernels, use one warp per query row, which walks
// the keys 32 at a time with an online softmax (running max and sum).
// dQ is gathered per query and dK/dV per key (looping over the queries that see it), so no
// gradient is accumulated with atomics and every result is bit-stable.
#include <algorithm>
#include <type_traits>
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

// doc_start (nullable): packed rows; query t attends to keys doc_start[t]..t of its row.
__global__ void k_attention_forward(float* out, float* lse, const float* qkv, int B, int T, int H,
                                    int Hkv, int D, float scale, const int32_t* doc_start) {
  const int w = warp_id();
  if (w >= B * H * T) return;
  const int t = w % T, h = (w / T) % H, b = w / (T * H), g = h / (H / Hkv);
  const int stride = (H + 2 * Hkv) * D;
  const float* base = qkv + (size_t)b * T * stride;
  const float* q = base + (size_t)t * stride + h * D;
  const int lo = doc_start ? doc_start[(size_t)b * T + t] : 0;
  const float* k0 = base + (size_t)lo * stride + H * D + g * D;
  const float l = warp_attend(out + ((size_t)(b * T + t) * H + h) * D, q, k0, k0 + Hkv * D, stride,
                              t + 1 - lo, D, scale);
  if (threadIdx.x % 32 == 0) lse[((size_t)b * H + h) * T + t] = l;
}

// dQ of query (b, h, i): sum over keys j <= i of P_ij (dP_ij - D_i) K_j, times the scale.
__global__ void k_attention_dq(float* dqkv, const float* dout, const float* qkv, const float* out,
                               const float* lse, int B, int T, int H, int Hkv, int D,
                               float scale, const int32_t* doc_start) {
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
  const int lo = doc_start ? doc_start[(size_t)b * T + i] : 0;
  for (int j0 = lo; j0 <= i; j0 += 32) {
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
                                float scale, const int32_t* doc_start) {
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
  // The queries that see key j: j up to the end of its document (documents are contiguous).
  int end = T;
  if (doc_start) {
    end = j + 1;
    while (end < T && doc_start[(size_t)b * T + end] <= j) ++end;
  }
  for (int h = g * group; h < (g + 1) * group; ++h) {
    for (int i0 = j; i0 < end; i0 += 32) {
      const int i = i0 + lane;
      float p = 0.f, ds = 0.f;
      if (i < end) {
        const float* q = base + (size_t)i * stride + h * D;
        const size_t row = ((size_t)(b * T + i) * H + h) * D;
        p = expf(scale * dot(q, k, D) - lse[((size_t)b * H + h) * T + i]);
        ds = p * (dot(dout + row, v, D) - dot(dout + row, out + row, D));
      }
      const int cnt = min(32, end - i0);
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

// ---- Tiled attention for head dimensions 16, 32, ..., 128 (D = 16 * DC) ----
// A block of 256 threads (16 x 16) owns a 64 x 64 tile of scores: thread (ty, tx) holds rows
// ty + 16 i and columns tx + 16 j (i, j < 4). Queries, keys and values are staged through
// shared memory once per tile (rows padded to D + 4 floats, so the 16-byte reads along d of 8
// consecutive rows hit 32 distinct banks), and the score tile never leaves the chip. Masked
// entries are selected away, never multiplied by zero, so a NaN in a key, value, query or
// gradient reaches exactly the outputs that depend on it. Every sum runs in a fixed order:
// the results are bit-stable.
constexpr int kTile = 64, kTileThreads = 256, kPLd = kTile + 4;

__device__ __forceinline__ float half_warp_max(float v) {
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
__device__ __forceinline__ float half_warp_sum(float v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float4 ld4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
// acc + a . b, summed in the order x, y, z, w
__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  return fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, fmaf(a.x, b.x, acc))));
}
__device__ __forceinline__ float part(float4 v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}

// Copies rows [t0, t0 + 64) of a (row stride `stride`) D-wide slice into a 64 x (D + 4) tile,
// zeros past T.
template <int D>
__device__ __forceinline__ void load_tile(float* dst, const float* src, size_t stride, int t0,
                                          int T) {
  constexpr int D4 = D / 4;
  for (int i = threadIdx.x; i < kTile * D4; i += kTileThreads) {
    const int r = i / D4, c = 4 * (i % D4);
    const float4 v = t0 + r < T ? ld4(src + (size_t)(t0 + r) * stride + c)
                                : make_float4(0.f, 0.f, 0.f, 0.f);
    *reinterpret_cast<float4*>(dst + r * (D + 4) + c) = v;
  }
}

// s[i][j] = A row (ty + 16 i) . B row (tx + 16 j), both tiles (D + 4)-strided.
template <int D>
__device__ __forceinline__ void tile_scores(float (&s)[4][4], const float* A, const float* B,
                                            int ty, int tx) {
  constexpr int LD = D + 4;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) s[i][j] = 0.f;
#pragma unroll 4
  for (int d = 0; d < D; d += 4) {
    float4 a[4], b[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = ld4(A + (ty + 16 * i) * LD + d);
#pragma unroll
    for (int j = 0; j < 4; ++j) b[j] = ld4(B + (tx + 16 * j) * LD + d);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) s[i][j] = dot4(a[i], b[j], s[i][j]);
  }
}

// acc[i][c] += sum over j of W[ty + 16 i][j] * X[j][tx + 16 c] (W kPLd-strided, X (D + 4)-
// strided); on a diagonal tile only j <= row (lower) or j >= row (upper) take part.
template <int DC, int kDiag>  // kDiag: 0 none, 1 keep j <= row, 2 keep j >= row
__device__ __forceinline__ void tile_accumulate(float (&acc)[4][DC], const float* W,
                                                const float* X, int ty, int tx, bool diag) {
  constexpr int LD = 16 * DC + 4;
  for (int j0 = 0; j0 < kTile; j0 += 4) {
    float4 w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = ld4(W + (ty + 16 * i) * kPLd + j0);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int j = j0 + k;
      float x[DC];
#pragma unroll
      for (int c = 0; c < DC; ++c) x[c] = X[j * LD + tx + 16 * c];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = ty + 16 * i;
        if (diag && (kDiag == 1 ? j > r : j < r)) continue;
        const float wv = part(w[i], k);
#pragma unroll
        for (int c = 0; c < DC; ++c) acc[i][c] = fmaf(wv, x[c], acc[i][c]);
      }
    }
  }
}

template <int DC>
__global__ void __launch_bounds__(kTileThreads)
    k_attn_fwd_tiled(float* out, float* lse, const float* qkv, int T, int H, int Hkv,
                     float scale) {
  constexpr int D = 16 * DC, LD = D + 4;
  extern __shared__ float4 sm4[];
  float* sm = reinterpret_cast<float*>(sm4);
  float *Qs = sm, *Ks = Qs + kTile * LD, *Vs = Ks + kTile * LD, *Ps = Vs + kTile * LD;
  const int qt = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / Hkv);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, q0 = qt * kTile;
  const size_t stride = (size_t)(H + 2 * Hkv) * D;
  const float* base = qkv + (size_t)b * T * stride;
  load_tile<D>(Qs, base + h * D, stride, q0, T);
  float acc[4][DC], m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int c = 0; c < DC; ++c) acc[i][c] = 0.f;
  }
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    const bool diag = kt == qt;
    __syncthreads();  // the previous tile's Ks, Vs, Ps are consumed
    load_tile<D>(Ks, base + (H + g) * D, stride, k0, T);
    load_tile<D>(Vs, base + (H + Hkv + g) * D, stride, k0, T);
    __syncthreads();
    float s[4][4];
    tile_scores<D>(s, Qs, Ks, ty, tx);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = ty + 16 * i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = tx + 16 * j;
        s[i][j] = (diag && c > r) ? -INFINITY : s[i][j] * scale;
        mx = fmaxf(mx, s[i][j]);
      }
      const float m_new = fmaxf(m[i], half_warp_max(mx));
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = s[i][j] == -INFINITY ? 0.f : expf(s[i][j] - m_new);
        Ps[r * kPLd + tx + 16 * j] = p;
        sum += p;
      }
      const float corr = m[i] == -INFINITY ? 0.f : expf(m[i] - m_new);
      l[i] = l[i] * corr + half_warp_sum(sum);
      m[i] = m_new;
#pragma unroll
      for (int c = 0; c < DC; ++c) acc[i][c] *= corr;
    }
    __syncthreads();
    tile_accumulate<DC, 1>(acc, Ps, Vs, ty, tx, diag);  // acc += P V
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = q0 + ty + 16 * i;
    if (t >= T) continue;
    float* o = out + ((size_t)(b * T + t) * H + h) * D;
#pragma unroll
    for (int c = 0; c < DC; ++c) o[tx + 16 * c] = acc[i][c] / l[i];
    if (tx == 0) lse[((size_t)b * H + h) * T + t] = m[i] + logf(l[i]);
  }
}

// Per row t of a 64-query tile of head h: Di = dO_t . O_t, and the row's log-sum-exp.
template <int D>
__device__ __forceinline__ void load_row_stats(float* Ds, float* Ls, const float* dout,
                                               const float* out, const float* lse, int b, int h,
                                               int H, int T, int q0) {
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = w; r < kTile; r += kTileThreads / 32) {
    const int t = q0 + r;
    float v = 0.f;
    if (t < T) {
      const size_t row = ((size_t)(b * T + t) * H + h) * D;
      for (int d = lane; d < D; d += 32) v += dout[row + d] * out[row + d];
    }
    v = warp_sum(v);
    if (lane == 0) {
      Ds[r] = v;
      Ls[r] = t < T ? lse[((size_t)b * H + h) * T + t] : 0.f;
    }
  }
}

// dQ of a 64-query tile: sum over key tiles of dS K, dS = P (dO V^T - Di).
template <int DC>
__global__ void __launch_bounds__(kTileThreads)
    k_attn_dq_tiled(float* dqkv, const float* dout, const float* qkv, const float* out,
                    const float* lse, int T, int H, int Hkv, float scale) {
  constexpr int D = 16 * DC, LD = D + 4;
  extern __shared__ float4 sm4[];
  float* sm = reinterpret_cast<float*>(sm4);
  float *Qs = sm, *dOs = Qs + kTile * LD, *Ks = dOs + kTile * LD, *Vs = Ks + kTile * LD;
  float *Ss = Vs + kTile * LD, *Ds = Ss + kTile * kPLd, *Ls = Ds + kTile;
  const int qt = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H, g = h / (H / Hkv);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, q0 = qt * kTile;
  const size_t stride = (size_t)(H + 2 * Hkv) * D;
  const float* base = qkv + (size_t)b * T * stride;
  load_tile<D>(Qs, base + h * D, stride, q0, T);
  load_tile<D>(dOs, dout + ((size_t)b * T * H + h) * D, (size_t)H * D, q0, T);
  load_row_stats<D>(Ds, Ls, dout, out, lse, b, h, H, T, q0);
  float acc[4][DC];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int c = 0; c < DC; ++c) acc[i][c] = 0.f;
  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    const bool diag = kt == qt;
    __syncthreads();
    load_tile<D>(Ks, base + (H + g) * D, stride, k0, T);
    load_tile<D>(Vs, base + (H + Hkv + g) * D, stride, k0, T);
    __syncthreads();
    float s[4][4], dp[4][4];
    tile_scores<D>(s, Qs, Ks, ty, tx);
    tile_scores<D>(dp, dOs, Vs, ty, tx);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = ty + 16 * i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = tx + 16 * j;
        const bool masked = (diag && c > r) || q0 + r >= T;
        Ss[r * kPLd + c] = masked ? 0.f : expf(s[i][j] * scale - Ls[r]) * (dp[i][j] - Ds[r]);
      }
    }
    __syncthreads();
    tile_accumulate<DC, 1>(acc, Ss, Ks, ty, tx, diag);  // acc += dS K
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = q0 + ty + 16 * i;
    if (t >= T) continue;
    float* dq = dqkv + (size_t)(b * T + t) * stride + h * D;
#pragma unroll
    for (int c = 0; c < DC; ++c) dq[tx + 16 * c] = acc[i][c] * scale;
  }
}

// dK and dV of a 64-key tile of kv head g: sums over the group's heads and the query tiles
// at or after it. Thread (ty, tx) holds keys ty + 16 i and queries tx + 16 j.
template <int DC>
__global__ void __launch_bounds__(kTileThreads)
    k_attn_dkv_tiled(float* dqkv, const float* dout, const float* qkv, const float* out,
                     const float* lse, int T, int H, int Hkv, float scale) {
  constexpr int D = 16 * DC, LD = D + 4;
  extern __shared__ float4 sm4[];
  float* sm = reinterpret_cast<float*>(sm4);
  float *Ks = sm, *Vs = Ks + kTile * LD, *Qs = Vs + kTile * LD, *dOs = Qs + kTile * LD;
  float *Ps = dOs + kTile * LD, *Ss = Ps + kTile * kPLd, *Ds = Ss + kTile * kPLd;
  float* Ls = Ds + kTile;
  const int kt = blockIdx.x, bg = blockIdx.y, b = bg / Hkv, g = bg % Hkv, group = H / Hkv;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, k0 = kt * kTile;
  const size_t stride = (size_t)(H + 2 * Hkv) * D;
  const float* base = qkv + (size_t)b * T * stride;
  load_tile<D>(Ks, base + (H + g) * D, stride, k0, T);
  load_tile<D>(Vs, base + (H + Hkv + g) * D, stride, k0, T);
  float dk[4][DC], dv[4][DC];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int c = 0; c < DC; ++c) dk[i][c] = dv[i][c] = 0.f;
  const int ntiles = (T + kTile - 1) / kTile;
  for (int h = g * group; h < (g + 1) * group; ++h) {
    for (int qt = kt; qt < ntiles; ++qt) {
      const int q0 = qt * kTile;
      const bool diag = qt == kt;
      __syncthreads();
      load_tile<D>(Qs, base + h * D, stride, q0, T);
      load_tile<D>(dOs, dout + ((size_t)b * T * H + h) * D, (size_t)H * D, q0, T);
      load_row_stats<D>(Ds, Ls, dout, out, lse, b, h, H, T, q0);
      __syncthreads();
      float s[4][4], dp[4][4];
      tile_scores<D>(s, Ks, Qs, ty, tx);
      tile_scores<D>(dp, Vs, dOs, ty, tx);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = ty + 16 * i;  // key
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int c = tx + 16 * j;  // query
          const bool masked = (diag && c < r) || q0 + c >= T;
          const float p = masked ? 0.f : expf(s[i][j] * scale - Ls[c]);
          Ps[r * kPLd + c] = p;
          Ss[r * kPLd + c] = masked ? 0.f : p * (dp[i][j] - Ds[c]);
        }
      }
      __syncthreads();
      tile_accumulate<DC, 2>(dv, Ps, dOs, ty, tx, diag);  // dV += P dO
      tile_accumulate<DC, 2>(dk, Ss, Qs, ty, tx, diag);   // dK += dS Q
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = k0 + ty + 16 * i;
    if (t >= T) continue;
    float* dkp = dqkv + (size_t)(b * T + t) * stride + (H + g) * D;
    float* dvp = dkp + Hkv * D;
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      dkp[tx + 16 * c] = dk[i][c] * scale;
      dvp[tx + 16 * c] = dv[i][c];
    }
  }
}

constexpr size_t tiled_fwd_smem(int D) {
  return sizeof(float) * (3 * kTile * (D + 4) + kTile * kPLd);
}
constexpr size_t tiled_dq_smem(int D) {
  return sizeof(float) * (4 * kTile * (D + 4) + kTile * kPLd + 2 * kTile);
}
constexpr size_t tiled_dkv_smem(int D) {
  return sizeof(float) * (4 * kTile * (D + 4) + 2 * kTile * kPLd + 2 * kTile);
}

// Launches the tiled kernels for head dimension 16 * DC; each kernel's shared-memory limit is
// raised once, on first use.
template <int DC>
void tiled_forward(float* out, float* lse, const float* qkv, const AttnShape& s, float scale) {
  constexpr int D = 16 * DC;
  static const bool init = [] {
    TANDEM_CU(cudaFuncSetAttribute(k_attn_fwd_tiled<DC>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)tiled_fwd_smem(D)));
    return true;
  }();
  (void)init;
  const dim3 grid((s.T + kTile - 1) / kTile, s.B * s.H);
  k_attn_fwd_tiled<DC><<<grid, kTileThreads, tiled_fwd_smem(D)>>>(out, lse, qkv, s.T, s.H, s.Hkv,
                                                                   scale);
  TANDEM_CU_LAUNCHED();
}

template <int DC>
void tiled_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                    const float* lse, const AttnShape& s, float scale) {
  constexpr int D = 16 * DC;
  static const bool init = [] {
    TANDEM_CU(cudaFuncSetAttribute(k_attn_dq_tiled<DC>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)tiled_dq_smem(D)));
    TANDEM_CU(cudaFuncSetAttribute(k_attn_dkv_tiled<DC>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)tiled_dkv_smem(D)));
    return true;
  }();
  (void)init;
  const int tiles = (s.T + kTile - 1) / kTile;
  k_attn_dq_tiled<DC><<<dim3(tiles, s.B * s.H), kTileThreads, tiled_dq_smem(D)>>>(
      dqkv, dout, qkv, out, lse, s.T, s.H, s.Hkv, scale);
  TANDEM_CU_LAUNCHED();
  k_attn_dkv_tiled<DC><<<dim3(tiles, s.B * s.Hkv), kTileThreads, tiled_dkv_smem(D)>>>(
      dqkv, dout, qkv, out, lse, s.T, s.H, s.Hkv, scale);
  TANDEM_CU_LAUNCHED();
}

// The tiled path for D = 16, 32, ..., 128; false where the warp-per-row kernels must run.
template <class F>
bool tiled_dispatch(int D, F&& f) {
  switch (D) {
    case 16: f(std::integral_constant<int, 1>{}); return true;
    case 32: f(std::integral_constant<int, 2>{}); return true;
    case 48: f(std::integral_constant<int, 3>{}); return true;
    case 64: f(std::integral_constant<int, 4>{}); return true;
    case 80: f(std::integral_constant<int, 5>{}); return true;
    case 96: f(std::integral_constant<int, 6>{}); return true;
    case 112: f(std::integral_constant<int, 7>{}); return true;
    case 128: f(std::integral_constant<int, 8>{}); return true;
    default: return false;
  }
}

unsigned warp_blocks(size_t warps) { return blocks_for(warps * 32, 32 * kWarpsPerBlock); }

}  // namespace

void CudaBackend::attention_forward(float* out, float* lse, const float* qkv, const AttnShape& s) {
  TANDEM_CHECK(s.D <= 32 * kMaxPerLane && s.H % s.Hkv == 0);
  const size_t warps = (size_t)s.B * s.H * s.T;
  if (warps == 0) return;
  const float scale = 1.0f / sqrtf((float)s.D);
  // Packed rows take the per-query warp kernels, which bound each query's keys.
  if (!s.doc_start &&
      tiled_dispatch(s.D, [&](auto dc) { tiled_forward<decltype(dc)::value>(out, lse, qkv, s, scale); }))
    return;
  k_attention_forward<<<warp_blocks(warps), 32 * kWarpsPerBlock>>>(
      out, lse, qkv, s.B, s.T, s.H, s.Hkv, s.D, scale, s.doc_start);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::attention_backward(float* dqkv, const float* dout, const float* qkv,
                                     const float* out, const float* lse, const AttnShape& s) {
  TANDEM_CHECK(s.D <= 32 * kMaxPerLane && s.H % s.Hkv == 0);
  if ((size_t)s.B * s.T == 0) return;
  const float scale = 1.0f / sqrtf((float)s.D);
  if (!s.doc_start && tiled_dispatch(s.D, [&](auto dc) {
        tiled_backward<decltype(dc)::value>(dqkv, dout, qkv, out, lse, s, scale);
      }))
    return;
  k_attention_dq<<<warp_blocks((size_t)s.B * s.H * s.T), 32 * kWarpsPerBlock>>>(
      dqkv, dout, qkv, out, lse, s.B, s.T, s.H, s.Hkv, s.D, scale, s.doc_start);
  TANDEM_CU_LAUNCHED();
  k_attention_dkv<<<warp_blocks((size_t)s.B * s.Hkv * s.T), 32 * kWarpsPerBlock>>>(
      dqkv, dout, qkv, out, lse, s.B, s.T, s.H, s.Hkv, s.D, scale, s.doc_start);
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
