// CUDA backend: matmuls on cuBLAS (bf16 tensor cores with fp32 accumulation, or fp32), and the
// inference matmul against stored weights: fp32 panels with a fixed summation order, int8/4-bit
// blocks with the CPU's exact arithmetic (activations quantized per block of 32, an exact
// integer dot per block, one fused multiply-add per block), so q8/q4 results match the CPU.
#include <cstdint>

#include "tandem/backend/cuda/cuda_impl.h"
#include "tandem/core/error.h"

namespace tandem::cuda {
namespace {

// One warp per (row, block of 32): scale = max|x| / 127, q = round-to-nearest-even(x / scale).
__global__ void k_quantize_rows(int8_t* q, float* d, const float* x, int M, int K) {
  const int nb = K / kQBlock;
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  if (warp >= M * nb) return;
  const int m = warp / nb, b = warp % nb;
  const float v = x[(size_t)m * K + b * kQBlock + lane];
  float amax = fabsf(v);
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float s = __fdiv_rn(amax, 127.f), inv = s > 0.f ? __fdiv_rn(1.f, s) : 0.f;
  q[(size_t)m * K + b * kQBlock + lane] = (int8_t)rintf(__fmul_rn(v, inv));
  if (lane == 0) d[(size_t)m * nb + b] = s;
}

__device__ __forceinline__ int stored_q(const uint8_t* panel, bool q8, int r, int k) {
  if (q8) return panel[(size_t)(k / 4) * 64 + r * 4 + k % 4];
  const int b = k / kQBlock, g = (k % kQBlock) / 4;
  const uint8_t byte = panel[(size_t)b * 256 + (g / 2) * 64 + r * 4 + k % 4];
  return g % 2 == 0 ? (byte & 0x0F) : (byte >> 4);
}

__global__ void k_wmatmul_quant(float* out, const int8_t* xq, const float* xd,
                                const uint8_t* w, const float* wscale, int M, int N, int K,
                                bool q8) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
  if (n >= N || m >= M) return;
  const int nb = K / kQBlock, p = n / kQPanel, r = n % kQPanel, off = q8 ? 128 : 8;
  const uint8_t* panel = w + (size_t)p * (q8 ? (size_t)K * 16 : (size_t)K * 8);
  const float* sc = wscale + (size_t)p * nb * kQPanel;
  const int8_t* xr = xq + (size_t)m * K;
  float acc = 0.f;
  for (int b = 0; b < nb; ++b) {
    int32_t isum = 0;
    for (int j = 0; j < kQBlock; ++j) {
      const int k = b * kQBlock + j;
      isum += (stored_q(panel, q8, r, k) - off) * xr[k];
    }
    const float s = __fmul_rn(xd[(size_t)m * nb + b], sc[b * kQPanel + r]);
    acc = __fmaf_rn((float)isum, s, acc);
  }
  out[(size_t)m * N + n] = acc;
}

// fp32 panels (16 rows, k-major; the last panel padded to 16): one block per (panel, row),
// thread (r, s) sums k = s, s + 8, ... of output column 16p + r, then the 8 slices are added
// in a fixed order. Each output is computed the same way whatever M is, so a row's result
// does not depend on the rows batched with it (cuBLAS picks algorithms by shape).
constexpr int kF32Slices = 8;
__global__ void k_wmatmul_f32(float* out, const float* x, const float* w, int M, int N, int K) {
  __shared__ float part[kF32Slices][kF32Panel];
  const int p = blockIdx.x, m = blockIdx.y, r = threadIdx.x % kF32Panel,
            s = threadIdx.x / kF32Panel;
  const float* panel = w + (size_t)p * kF32Panel * K;
  const float* xr = x + (size_t)m * K;
  float acc = 0.f;
  for (int k = s; k < K; k += kF32Slices) acc = fmaf(panel[(size_t)k * kF32Panel + r], xr[k], acc);
  part[s][r] = acc;
  __syncthreads();
  if (s == 0) {
    float t = part[0][r];
#pragma unroll
    for (int i = 1; i < kF32Slices; ++i) t += part[i][r];
    const int n = p * kF32Panel + r;
    if (n < N) out[(size_t)m * N + n] = t;
  }
}

}  // namespace

// Row-major out (M, N) = x (M, K) · W (N, K)ᵀ is column-major outᵀ = W-view(K×N)ᵀ · x-view.
// In bf16 mode the operands are rounded to bf16 copies first (one pass each; dout once for
// both backward products) and the products run on bf16 inputs with fp32 accumulation and
// output: cuBLAS's fp32-input bf16 mode ran at about half the tensor cores' bf16 rate.
void CudaBackend::matmul_forward(float* out, const float* x, const float* w, int M, int N, int K) {
  if (M == 0 || N == 0) return;
  if (bf16_ && K > 0) {
    const auto* w16 = bf16_copy(0, w, (size_t)N * K);
    const auto* x16 = bf16_copy(1, x, (size_t)M * K);
    gemm_bf16(true, false, N, M, K, w16, K, x16, K, 0.f, out, N);
    return;
  }
  gemm(true, false, N, M, K, w, K, x, K, 0.f, out, N);
}

void CudaBackend::matmul_backward(float* dx, float* dw, const float* dout, const float* x,
                                  const float* w, int M, int N, int K) {
  if (M == 0 || N == 0 || K == 0) return;
  if (bf16_) {
    const auto* g16 = bf16_copy(1, dout, (size_t)M * N);
    if (dx) gemm_bf16(false, false, K, M, N, bf16_copy(0, w, (size_t)N * K), K, g16, N, 0.f, dx, K);
    if (dw) gemm_bf16(false, true, K, N, M, bf16_copy(2, x, (size_t)M * K), K, g16, N, 1.f, dw, K);
    return;
  }
  // dx (M, K) = dout (M, N) · W (N, K)
  if (dx) gemm(false, false, K, M, N, w, K, dout, N, 0.f, dx, K);
  // dW (N, K) += dout (M, N)ᵀ · x (M, K)
  if (dw) gemm(false, true, K, N, M, x, K, dout, N, 1.f, dw, K);
}

void CudaBackend::wmatmul_forward(float* out, const float* x, const WMatrix& w, int M,
                                  void* scratch) {
  const int N = w.N, K = w.K;
  TANDEM_CHECK(M >= 0 && N > 0 && K > 0);
  if (M == 0) return;
  if (w.type == WType::F32) {
    const dim3 grid(blocks_for(N, kF32Panel), M);
    k_wmatmul_f32<<<grid, kF32Panel * kF32Slices>>>(out, x, static_cast<const float*>(w.data), M,
                                                     N, K);
    TANDEM_CU_LAUNCHED();
    return;
  }
  TANDEM_CHECK(K % kQBlock == 0 && scratch != nullptr && w.scale != nullptr);
  int8_t* xq = static_cast<int8_t*>(scratch);
  float* xd = reinterpret_cast<float*>(static_cast<char*>(scratch) + (((size_t)M * K + 63) / 64) * 64);
  const int warps = M * (K / kQBlock);
  k_quantize_rows<<<blocks_for((size_t)warps * 32, 256), 256>>>(xq, xd, x, M, K);
  TANDEM_CU_LAUNCHED();
  const dim3 grid(blocks_for(N, 128), M);
  k_wmatmul_quant<<<grid, 128>>>(out, xq, xd, static_cast<const uint8_t*>(w.data), w.scale, M, N,
                                 K, w.type == WType::Q8);
  TANDEM_CU_LAUNCHED();
}

}  // namespace tandem::cuda
