// The CUDA backend: the class and the helpers its kernel files share. Device code only; nothing
// outside backend/cuda includes this header.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>

#include "tandem/backend/backend.h"

namespace tandem::cuda {

void check(cudaError_t e, const char* what, const char* file, int line);
void check(cublasStatus_t s, const char* what, const char* file, int line);
#define TANDEM_CU(call) ::tandem::cuda::check((call), #call, __FILE__, __LINE__)
#define TANDEM_CU_LAUNCHED() TANDEM_CU(cudaGetLastError())

constexpr int kSumBlocks = 1024;  // sum_squares: blocks of the first pass

inline unsigned blocks_for(size_t n, unsigned threads) {
  return (unsigned)((n + threads - 1) / threads);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, bool bf16);
  ~CudaBackend() override;

  std::string name() const override { return bf16_ ? "cuda" : "cuda-fp32"; }
  std::string matmul_precision() const override { return bf16_ ? "bf16" : "fp32"; }

  void* alloc(size_t bytes) override;
  void release(void* ptr) override;
  void to_device(void* dst, const void* src, size_t bytes) override;
  void to_host(void* dst, const void* src, size_t bytes) override;
  void zero(void* ptr, size_t bytes) override;
  void synchronize() override;

  void embedding_forward(float* out, const int32_t* tokens, const float* table, int N,
                         int C) override;
  void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int N,
                          int C) override;
  void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C,
                       float eps) override;
  void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                        const float* rstd, int N, int C) override;
  void matmul_forward(float* out, const float* x, const float* w, int M, int N, int K) override;
  void matmul_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                       int M, int N, int K) override;
  void rope(float* qkv, const AttnShape& s, int pos0, float theta, bool inverse) override;
  void attention_forward(float* out, float* lse, const float* qkv, const AttnShape& s) override;
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                          const float* lse, const AttnShape& s) override;
  void swiglu_forward(float* out, const float* gateup, int N, int F) override;
  void swiglu_backward(float* dgateup, const float* dout, const float* gateup, int N,
                       int F) override;
  void add_rmsnorm_forward(float* sum, float* out, float* rstd, const float* a, const float* b,
                           const float* w, int N, int C, float eps) override;
  void add(float* out, const float* a, const float* b, size_t n) override;
  void cross_entropy(float* losses, float* dlogits, const float* logits, const int32_t* targets,
                     int N, int V, float dscale) override;
  void cross_entropy_rows(float* losses, float* entropies, float* dlogits, const float* logits,
                          const int32_t* targets, const float* weights, int N, int V) override;
  void adamw(float* p, float* m, float* v, const float* g, size_t n, float lr, float beta1,
             float beta2, float eps, float wd, int64_t t) override;
  double sum_squares(const float* x, size_t n) override;
  void scale(float* x, size_t n, float s) override;
  bool all_finite(const float* x, size_t n) override;
  void attention_kv_forward(float* out, float* kcache, float* vcache, const float* qkv,
                            const AttnShape& s, int pos0, int n) override;
  void rope_batch(float* qkv, const AttnShape& s, const KvBatch& b, float theta) override;
  void attention_kv_batch(float* out, float* kcache, float* vcache, const float* qkv,
                          const AttnShape& s, const KvBatch& b) override;
  void wmatmul_forward(float* out, const float* x, const WMatrix& w, int M,
                       void* scratch) override;

  // out (rows x cols, leading dimension ldc) = op(A) op(B) in cuBLAS's column-major terms, in
  // fp32; beta 0 writes, 1 accumulates.
  void gemm(bool ta, bool tb, int m, int n, int k, const float* A, int lda, const float* B,
            int ldb, float beta, float* C, int ldc);

  // The same with bf16 operands (from bf16_copy) and fp32 output: the tensor cores' native
  // input format, so cuBLAS converts nothing inside the product.
  void gemm_bf16(bool ta, bool tb, int m, int n, int k, const __nv_bfloat16* A, int lda,
                 const __nv_bfloat16* B, int ldb, float beta, float* C, int ldc);
  // src (n floats) rounded to bf16 (nearest even) in device buffer `slot` (0..2), valid until
  // that slot is used again.
  const __nv_bfloat16* bf16_copy(int slot, const float* src, size_t n);

  // Small per-row tables of an inference step (positions, slots) copied to the device.
  int32_t* upload_meta(const int32_t* host, size_t count);
  // Device scratch of at least `bytes`, valid until the next call (kernels on the one stream
  // finish with it before a later launch can reuse it).
  void* scratch(size_t bytes);

 private:
  int device_;
  bool bf16_;
  cublasHandle_t blas_ = nullptr;
  double* partials_ = nullptr;  // sum_squares: one double per block, then the total
  int* flag_ = nullptr;         // all_finite
  int32_t* meta_ = nullptr;     // upload_meta
  size_t meta_cap_ = 0;
  void* scratch_ = nullptr;
  size_t scratch_cap_ = 0;
  __nv_bfloat16* bf16_buf_[3] = {nullptr, nullptr, nullptr};
  size_t bf16_cap_[3] = {0, 0, 0};
};

}  // namespace tandem::cuda
