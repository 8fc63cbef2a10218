// The CPU backend: fp32 kernels with OpenMP threads and SIMD; GEMM through OpenBLAS with its core
// chosen from the CPU's own features (see blas.h, gemm_select.h).
#pragma once

#include <vector>

#include "tandem/backend/backend.h"

namespace tandem {

// The quantized (Q8/Q4) wmatmul in each instruction-set variant. All variants give the same
// bits: they share one definition of the arithmetic (16 float lanes per pair of blocks, each
// lane the exact integer dot product of 4 values, scaled and accumulated with one FMA, summed
// in a fixed order at the end). CpuBackend runs the best variant the CPU supports; tests run
// every supported one against the others.
enum class QVariant { kPortable, kAvx2, kAvx512Vnni };
bool qvariant_supported(QVariant v);
QVariant qvariant_best();
const char* qvariant_name(QVariant v);
void wmatmul_quant(QVariant v, float* out, const float* x, const WMatrix& w, int M,
                   void* scratch, int threads);

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads);
  std::string name() const override { return "cpu"; }
  std::string describe() const override;
  int threads() const { return threads_; }

  void* alloc(size_t bytes) override;
  void release(void* ptr) override;
  void to_device(void* dst, const void* src, size_t bytes) override;
  void to_host(void* dst, const void* src, size_t bytes) override;
  void zero(void* ptr, size_t bytes) override;
  void synchronize() override {}

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

 private:
  int threads_;
  std::vector<float> rope_table_;  // cos/sin scratch of rope(), sized on first use
  // cos/sin by position for rope_batch (decoding): rows 0..n-1 for one (theta, head size),
  // extended on demand, rebuilt when either changes.
  std::vector<float> rope_cache_;
  float rope_cache_theta_ = 0.f;
  int rope_cache_d_ = 0;
};

}  // namespace tandem
