// CUDA backend: embedding, rmsnorm, rope, swiglu, residual add, cross-entropy, AdamW and the
// gradient utilities. Reductions run in a fixed order (per-thread strided partials, then a
// fixed shared-memory tree), never with floating-point atomics, so results are bit-stable.
#include <algorithm>
#include <cmath>
#include <vector>

#include "tandem/backend/cuda/cuda_impl.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;

// Sum (or max) over a block of kThreads threads in a fixed tree; every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, T* shared, Op op) {
  const int tid = threadIdx.x;
  shared[tid] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) shared[tid] = op(shared[tid], shared[tid + s]);
    __syncthreads();
  }
  const T r = shared[0];
  __syncthreads();
  return r;
}
struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__global__ void k_embedding_forward(float* out, const int32_t* tokens, const float* table, int N,
                                    int C) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)N * C) return;
  const int n = (int)(i / C), c = (int)(i % C);
  out[i] = table[(size_t)tokens[n] * C + c];
}

// One thread per column walks the tokens in order: the CPU's summation order, no atomics.
__global__ void k_embedding_backward(float* dtable, const float* dout, const int32_t* tokens,
                                     int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int n = 0; n < N; ++n) dtable[(size_t)tokens[n] * C + c] += dout[(size_t)n * C + c];
}

__global__ void k_rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int C,
                                  float eps) {
  __shared__ float sh[kThreads];
  const float* xr = x + (size_t)blockIdx.x * C;
  float ss = 0.f;
  for (int c = threadIdx.x; c < C; c += kThreads) ss += xr[c] * xr[c];
  ss = block_reduce(ss, sh, Sum{});
  const float r = 1.0f / sqrtf(ss / C + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  float* o = out + (size_t)blockIdx.x * C;
  for (int c = threadIdx.x; c < C; c += kThreads) o[c] = xr[c] * r * w[c];
}

// k_add followed by k_rmsnorm_forward in one pass over a row: each thread writes and then
// reads back only its own columns, so sum may alias a or b; the sums of squares go through the
// same per-thread partials and tree, so the values are those of the two kernels.
__global__ void k_add_rmsnorm_forward(float* sum, float* out, float* rstd, const float* a,
                                      const float* b, const float* w, int C, float eps) {
  __shared__ float sh[kThreads];
  const size_t row = (size_t)blockIdx.x * C;
  float ss = 0.f;
  for (int c = threadIdx.x; c < C; c += kThreads) {
    const float h = a[row + c] + b[row + c];
    sum[row + c] = h;
    ss += h * h;
  }
  ss = block_reduce(ss, sh, Sum{});
  const float r = 1.0f / sqrtf(ss / C + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (int c = threadIdx.x; c < C; c += kThreads) out[row + c] = sum[row + c] * r * w[c];
}

__global__ void k_rmsnorm_backward_dx(float* dx, const float* dout, const float* x,
                                      const float* w, const float* rstd, int C) {
  __shared__ float sh[kThreads];
  const size_t off = (size_t)blockIdx.x * C;
  const float r = rstd[blockIdx.x];
  float dot = 0.f;
  for (int c = threadIdx.x; c < C; c += kThreads) dot += dout[off + c] * w[c] * x[off + c];
  dot = block_reduce(dot, sh, Sum{});
  const float k = dot * r * r * r / C;
  for (int c = threadIdx.x; c < C; c += kThreads)
    dx[off + c] = dout[off + c] * w[c] * r - x[off + c] * k;
}

// dw[c] += sum over rows of dout * x * rstd, in two fixed-order passes: partial sums over
// chunks of kDwRows rows (block (chunk, 32 columns), 8 row lanes per column, added in order),
// then the chunks in order.
constexpr int kDwRows = 256;
__global__ void k_rmsnorm_dw_partial(float* part, const float* dout, const float* x,
                                     const float* rstd, int N, int C) {
  __shared__ float sh[8][33];
  const int c = blockIdx.y * 32 + threadIdx.x % 32, lane_row = threadIdx.x / 32;
  const int n0 = blockIdx.x * kDwRows, n1 = min(N, n0 + kDwRows);
  float acc = 0.f;
  if (c < C)
    for (int n = n0 + lane_row; n < n1; n += 8)
      acc += dout[(size_t)n * C + c] * x[(size_t)n * C + c] * rstd[n];
  sh[lane_row][threadIdx.x % 32] = acc;
  __syncthreads();
  if (lane_row == 0 && c < C) {
    float t = sh[0][threadIdx.x];
    for (int i = 1; i < 8; ++i) t += sh[i][threadIdx.x];
    part[(size_t)blockIdx.x * C + c] = t;
  }
}

__global__ void k_rmsnorm_dw_final(float* dw, const float* part, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.f;
  for (int i = 0; i < chunks; ++i) acc += part[(size_t)i * C + c];
  dw[c] += acc;
}

__global__ void k_swiglu_forward(float* out, const float* gateup, int N, int F) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)N * F) return;
  const size_t n = i / F, f = i % F;
  const float g = gateup[n * 2 * F + f], u = gateup[n * 2 * F + F + f];
  const float s = 1.0f / (1.0f + expf(-g));
  out[i] = g * s * u;
}

__global__ void k_swiglu_backward(float* dgateup, const float* dout, const float* gateup, int N,
                                  int F) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)N * F) return;
  const size_t n = i / F, f = i % F;
  const float g = gateup[n * 2 * F + f], u = gateup[n * 2 * F + F + f], d = dout[i];
  const float s = 1.0f / (1.0f + expf(-g));
  dgateup[n * 2 * F + F + f] = d * g * s;
  dgateup[n * 2 * F + f] = d * u * s * (1.0f + g * (1.0f - s));
}

__global__ void k_add(float* out, const float* a, const float* b, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = a[i] + b[i];
}

__global__ void k_scale(float* x, size_t n, float s) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= s;
}

// One block per row: max, sum of exponentials, loss; the gradient row may alias the logits
// (each element is read by the thread that later writes it, and the target is read first).
__global__ void k_cross_entropy(float* losses, float* dlogits, const float* logits,
                                const int32_t* targets, int V, float dscale) {
  __shared__ float sh[kThreads];
  const size_t off = (size_t)blockIdx.x * V;
  const float* x = logits + off;
  const int tgt = targets[blockIdx.x];
  if (tgt < 0) {
    if (threadIdx.x == 0) losses[blockIdx.x] = 0.f;
    if (dlogits)
      for (int v = threadIdx.x; v < V; v += kThreads) dlogits[off + v] = 0.f;
    return;
  }
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += kThreads) mx = fmaxf(mx, x[v]);
  mx = block_reduce(mx, sh, Max{});
  const float xt = x[tgt];
  float sum = 0.f;
  for (int v = threadIdx.x; v < V; v += kThreads) sum += expf(x[v] - mx);
  sum = block_reduce(sum, sh, Sum{});
  if (threadIdx.x == 0) losses[blockIdx.x] = mx + logf(sum) - xt;
  if (!dlogits) return;
  const float k = dscale / sum;
  for (int v = threadIdx.x; v < V; v += kThreads) {
    const float e = expf(x[v] - mx) * k;
    dlogits[off + v] = v == tgt ? e - dscale : e;
  }
}

// As k_cross_entropy with a weight per row, and the entropy of each row's softmax.
__global__ void k_cross_entropy_rows(float* losses, float* entropies, float* dlogits,
                                     const float* logits, const int32_t* targets,
                                     const float* weights, int V) {
  __shared__ float sh[kThreads];
  __shared__ double shd[kThreads];
  const size_t off = (size_t)blockIdx.x * V;
  const float* x = logits + off;
  const int tgt = targets[blockIdx.x];
  if (tgt < 0) {
    if (threadIdx.x == 0) {
      losses[blockIdx.x] = 0.f;
      if (entropies) entropies[blockIdx.x] = 0.f;
    }
    if (dlogits)
      for (int v = threadIdx.x; v < V; v += kThreads) dlogits[off + v] = 0.f;
    return;
  }
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += kThreads) mx = fmaxf(mx, x[v]);
  mx = block_reduce(mx, sh, Max{});
  const float xt = x[tgt];
  float sum = 0.f;
  double px = 0.0;
  for (int v = threadIdx.x; v < V; v += kThreads) {
    const float e = expf(x[v] - mx);
    sum += e;
    if (entropies) px += (double)e * (x[v] - mx);
  }
  sum = block_reduce(sum, sh, Sum{});
  if (entropies) px = block_reduce(px, shd, Sum{});
  const float lse = logf(sum);
  if (threadIdx.x == 0) {
    losses[blockIdx.x] = mx + lse - xt;
    if (entropies) entropies[blockIdx.x] = (float)((double)lse - px / sum);
  }
  if (!dlogits) return;
  const float w = weights[blockIdx.x];
  const float k = w / sum;
  for (int v = threadIdx.x; v < V; v += kThreads) {
    const float e = expf(x[v] - mx) * k;
    dlogits[off + v] = v == tgt ? e - w : e;
  }
}

__global__ void k_adamw(float* p, float* m, float* v, const float* g, size_t n, float lr,
                        float beta1, float beta2, float eps, float wd, float inv_c1,
                        float inv_c2) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gi = g[i];
  const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
  const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  p[i] -= lr * (mi * inv_c1 / (sqrtf(vi * inv_c2) + eps) + wd * p[i]);
}

// Fixed grid of kSumBlocks blocks, grid-stride partials in double; then one block sums them.
__global__ void k_sum_squares(double* partials, const float* x, size_t n) {
  __shared__ double sh[kThreads];
  double acc = 0.0;
  for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < n;
       i += (size_t)kSumBlocks * kThreads)
    acc += (double)x[i] * x[i];
  acc = block_reduce(acc, sh, Sum{});
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void k_sum_partials(double* partials) {
  __shared__ double sh[kThreads];
  double acc = 0.0;
  for (int i = threadIdx.x; i < kSumBlocks; i += kThreads) acc += partials[i];
  acc = block_reduce(acc, sh, Sum{});
  if (threadIdx.x == 0) partials[kSumBlocks] = acc;
}

__global__ void k_all_finite(int* bad, const float* x, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && !isfinite(x[i])) *bad = 1;  // every writer stores the same value
}

// Rotates pair (i, i + half) of head h of row r; angles as the CPU computes them (double,
// then cast to float), position from `pos` or pos0 + r % T.
__global__ void k_rope(float* qkv, int rows, int heads, int D, int stride, const int32_t* pos,
                       int pos0, int T, float theta, bool inverse, const int32_t* doc_start) {
  const int half = D / 2;
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)rows * heads * half) return;
  const int f = (int)(i % half), h = (int)((i / half) % heads), r = (int)(i / ((size_t)half * heads));
  const int p = pos ? pos[r] : pos0 + r % T - (doc_start ? doc_start[r] : 0);
  const double a = (double)p * pow((double)theta, -2.0 * f / D);
  const float cs = (float)cos(a), sn = inverse ? -(float)sin(a) : (float)sin(a);
  float* x = qkv + (size_t)r * stride + (size_t)h * D;
  const float x1 = x[f], x2 = x[f + half];
  x[f] = x1 * cs - x2 * sn;
  x[f + half] = x2 * cs + x1 * sn;
}

}  // namespace

void CudaBackend::embedding_forward(float* out, const int32_t* tokens, const float* table, int N,
                                    int C) {
  if ((size_t)N * C == 0) return;
  k_embedding_forward<<<blocks_for((size_t)N * C, kThreads), kThreads>>>(out, tokens, table, N, C);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::embedding_backward(float* dtable, const float* dout, const int32_t* tokens,
                                     int N, int C) {
  if (N == 0 || C == 0) return;
  k_embedding_backward<<<blocks_for(C, 128), 128>>>(dtable, dout, tokens, N, C);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N,
                                  int C, float eps) {
  if (N == 0) return;
  k_rmsnorm_forward<<<N, kThreads>>>(out, rstd, x, w, C, eps);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::add_rmsnorm_forward(float* sum, float* out, float* rstd, const float* a,
                                      const float* b, const float* w, int N, int C, float eps) {
  if (N == 0) return;
  k_add_rmsnorm_forward<<<N, kThreads>>>(sum, out, rstd, a, b, w, C, eps);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x,
                                   const float* w, const float* rstd, int N, int C) {
  if (N == 0) return;
  k_rmsnorm_backward_dx<<<N, kThreads>>>(dx, dout, x, w, rstd, C);
  TANDEM_CU_LAUNCHED();
  const int chunks = (N + kDwRows - 1) / kDwRows;
  float* part = static_cast<float*>(scratch((size_t)chunks * C * sizeof(float)));
  k_rmsnorm_dw_partial<<<dim3(chunks, (C + 31) / 32), 256>>>(part, dout, x, rstd, N, C);
  TANDEM_CU_LAUNCHED();
  k_rmsnorm_dw_final<<<blocks_for(C, 128), 128>>>(dw, part, chunks, C);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::swiglu_forward(float* out, const float* gateup, int N, int F) {
  if ((size_t)N * F == 0) return;
  k_swiglu_forward<<<blocks_for((size_t)N * F, kThreads), kThreads>>>(out, gateup, N, F);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::swiglu_backward(float* dgateup, const float* dout, const float* gateup, int N,
                                  int F) {
  if ((size_t)N * F == 0) return;
  k_swiglu_backward<<<blocks_for((size_t)N * F, kThreads), kThreads>>>(dgateup, dout, gateup, N, F);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::add(float* out, const float* a, const float* b, size_t n) {
  if (n == 0) return;
  k_add<<<blocks_for(n, kThreads), kThreads>>>(out, a, b, n);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::scale(float* x, size_t n, float s) {
  if (n == 0) return;
  k_scale<<<blocks_for(n, kThreads), kThreads>>>(x, n, s);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::cross_entropy(float* losses, float* dlogits, const float* logits,
                                const int32_t* targets, int N, int V, float dscale) {
  if (N == 0) return;
  k_cross_entropy<<<N, kThreads>>>(losses, dlogits, logits, targets, V, dscale);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::cross_entropy_rows(float* losses, float* entropies, float* dlogits,
                                     const float* logits, const int32_t* targets,
                                     const float* weights, int N, int V) {
  if (N == 0) return;
  k_cross_entropy_rows<<<N, kThreads>>>(losses, entropies, dlogits, logits, targets, weights, V);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::adamw(float* p, float* m, float* v, const float* g, size_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int64_t t) {
  if (n == 0) return;
  // Bias corrections exactly as the CPU computes them.
  const float c1 = 1.0f - (float)std::pow((double)beta1, (double)t);
  const float c2 = 1.0f - (float)std::pow((double)beta2, (double)t);
  k_adamw<<<blocks_for(n, kThreads), kThreads>>>(p, m, v, g, n, lr, beta1, beta2, eps, wd,
                                                 1.0f / c1, 1.0f / c2);
  TANDEM_CU_LAUNCHED();
}

double CudaBackend::sum_squares(const float* x, size_t n) {
  k_sum_squares<<<kSumBlocks, kThreads>>>(partials_, x, n);
  TANDEM_CU_LAUNCHED();
  k_sum_partials<<<1, kThreads>>>(partials_);
  TANDEM_CU_LAUNCHED();
  double r = 0;
  TANDEM_CU(cudaMemcpy(&r, partials_ + kSumBlocks, sizeof(double), cudaMemcpyDeviceToHost));
  return r;
}

bool CudaBackend::all_finite(const float* x, size_t n) {
  TANDEM_CU(cudaMemset(flag_, 0, sizeof(int)));
  if (n) {
    k_all_finite<<<blocks_for(n, kThreads), kThreads>>>(flag_, x, n);
    TANDEM_CU_LAUNCHED();
  }
  int bad = 0;
  TANDEM_CU(cudaMemcpy(&bad, flag_, sizeof(int), cudaMemcpyDeviceToHost));
  return bad == 0;
}

void CudaBackend::rope(float* qkv, const AttnShape& s, int pos0, float theta, bool inverse) {
  const int rows = s.B * s.T, heads = s.H + s.Hkv;
  const size_t n = (size_t)rows * heads * (s.D / 2);
  if (n == 0) return;
  k_rope<<<blocks_for(n, kThreads), kThreads>>>(qkv, rows, heads, s.D, s.qkv_stride(), nullptr,
                                                pos0, s.T, theta, inverse, s.doc_start);
  TANDEM_CU_LAUNCHED();
}

void CudaBackend::rope_batch(float* qkv, const AttnShape& s, const KvBatch& b, float theta) {
  int rows = 0;
  for (int i = 0; i < b.count; ++i) rows = std::max(rows, b.row0[i] + b.n[i]);
  if (rows == 0) return;
  std::vector<int32_t> pos(rows, 0);
  for (int i = 0; i < b.count; ++i)
    for (int t = 0; t < b.n[i]; ++t) pos[b.row0[i] + t] = b.pos0[i] + t;
  const int32_t* dpos = upload_meta(pos.data(), pos.size());
  const int heads = s.H + s.Hkv;
  const size_t n = (size_t)rows * heads * (s.D / 2);
  k_rope<<<blocks_for(n, kThreads), kThreads>>>(qkv, rows, heads, s.D, s.qkv_stride(), dpos, 0,
                                                1, theta, false, nullptr);
  TANDEM_CU_LAUNCHED();
}

}  // namespace tandem::cuda
