// CUDA backend: device, memory, error checks, and the factory.
#include <string>

#include "tandem/backend/cuda/cuda_backend.h"
#include "tandem/backend/cuda/cuda_impl.h"
#include "tandem/core/error.h"

namespace tandem {
namespace cuda {

void check(cudaError_t e, const char* what, const char* file, int line) {
  if (e == cudaSuccess) return;
  fail(std::string("[cuda] ") + cudaGetErrorString(e) + " in " + what + " (" + file + ":" +
       std::to_string(line) + ")");
}

void check(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  fail(std::string("[cuda] cuBLAS status ") + std::to_string((int)s) + " in " + what + " (" +
       file + ":" + std::to_string(line) + ")");
}

namespace {
constexpr size_t kMetaInts = 1 << 20;  // per-row tables of one inference step

}  // namespace

CudaBackend::CudaBackend(int device, bool bf16) : device_(device), bf16_(bf16) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0)
    fail(std::string("[cuda] no device: ") +
         (e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports no GPU"));
  TANDEM_CU(cudaSetDevice(device_));
  TANDEM_CU(cublasCreate(&blas_));
  // Deterministic by default: no cuBLAS algorithms that reduce with atomics.
  TANDEM_CU(cublasSetAtomicsMode(blas_, CUBLAS_ATOMICS_NOT_ALLOWED));
  TANDEM_CU(cudaMalloc(&partials_, (kSumBlocks + 1) * sizeof(double)));
  TANDEM_CU(cudaMalloc(&flag_, sizeof(int)));
  TANDEM_CU(cudaMalloc(&meta_, kMetaInts * sizeof(int32_t)));
  meta_cap_ = kMetaInts;
}

CudaBackend::~CudaBackend() {
  cudaFree(partials_);
  cudaFree(flag_);
  cudaFree(meta_);
  cudaFree(scratch_);
  for (auto* b : bf16_buf_) cudaFree(b);
  if (blas_) cublasDestroy(blas_);
}

void* CudaBackend::alloc(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) bytes = 1;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess)
    fail("[cuda] cannot allocate " + std::to_string(bytes) + " bytes on the device: " +
         cudaGetErrorString(e));
  TANDEM_CU(cudaMemset(p, 0, bytes));
  return p;
}

void CudaBackend::release(void* ptr) {
  if (ptr) TANDEM_CU(cudaFree(ptr));
}

void CudaBackend::to_device(void* dst, const void* src, size_t bytes) {
  if (bytes) TANDEM_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void CudaBackend::to_host(void* dst, const void* src, size_t bytes) {
  if (bytes) TANDEM_CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void CudaBackend::zero(void* ptr, size_t bytes) {
  if (bytes) TANDEM_CU(cudaMemsetAsync(ptr, 0, bytes));
}

void CudaBackend::synchronize() { TANDEM_CU(cudaDeviceSynchronize()); }

int32_t* CudaBackend::upload_meta(const int32_t* host, size_t count) {
  if (count > meta_cap_)
    fail("[cuda] an inference step needs " + std::to_string(count) +
         " metadata entries, more than the " + std::to_string(meta_cap_) + " reserved");
  TANDEM_CU(cudaMemcpy(meta_, host, count * sizeof(int32_t), cudaMemcpyHostToDevice));
  return meta_;
}

namespace {
// A device buffer of at least `bytes`, reallocated when too small. cudaFree waits for the work
// in flight, so no kernel still reads the old buffer.
template <typename T>
T* grown(T*& buf, size_t& cap, size_t bytes) {
  if (bytes > cap) {
    if (buf) TANDEM_CU(cudaFree(buf));
    buf = nullptr;
    cap = 0;
    TANDEM_CU(cudaMalloc(&buf, bytes));
    cap = bytes;
  }
  return buf;
}
}  // namespace

void* CudaBackend::scratch(size_t bytes) { return grown(scratch_, scratch_cap_, bytes); }

namespace {
__global__ void k_to_bf16(__nv_bfloat16* dst, const float* src, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}
}  // namespace

const __nv_bfloat16* CudaBackend::bf16_copy(int slot, const float* src, size_t n) {
  __nv_bfloat16* dst = grown(bf16_buf_[slot], bf16_cap_[slot], n * sizeof(__nv_bfloat16));
  if (n) {
    k_to_bf16<<<blocks_for(n, 256), 256>>>(dst, src, n);
    TANDEM_CU_LAUNCHED();
  }
  return dst;
}

void CudaBackend::gemm_bf16(bool ta, bool tb, int m, int n, int k, const __nv_bfloat16* A,
                            int lda, const __nv_bfloat16* B, int ldb, float beta, float* C,
                            int ldc) {
  const float alpha = 1.f;
  TANDEM_CU(cublasGemmEx(blas_, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                         m, n, k, &alpha, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb, &beta, C,
                         CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm(bool ta, bool tb, int m, int n, int k, const float* A, int lda,
                       const float* B, int ldb, float beta, float* C, int ldc) {
  const float alpha = 1.f;
  TANDEM_CU(cublasGemmEx(blas_, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                         m, n, k, &alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta, C,
                         CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}


}  // namespace cuda

std::unique_ptr<Backend> make_cuda_backend(bool bf16) {
  return std::make_unique<cuda::CudaBackend>(0, bf16);
}

}  // namespace tandem
