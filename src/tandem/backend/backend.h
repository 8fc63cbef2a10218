// THE backend interface: device memory plus the fixed kernel set that model/ and train/ call.
// A new accelerator implements this class in its own folder and passes the kernel tests
// (tests/backend, runnable against any backend with TANDEM_TEST_BACKEND).
//
// Conventions: outputs come first, then inputs, then sizes. All tensors are row-major fp32
// unless noted. Backward kernels ADD into parameter gradients (so micro-batches accumulate)
// and WRITE activation gradients. Kernels never allocate. Every reduction has a fixed order,
// so the same inputs and thread count give the same bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tandem {

// Layout of the fused attention input: each token's row holds [q (H*D) | k (Hkv*D) | v (Hkv*D)].
struct AttnShape {
  int B = 1;    // batch
  int T = 1;    // sequence length
  int H = 1;    // query heads
  int Hkv = 1;  // key/value heads; divides H
  int D = 1;    // head dimension
  // Packed rows (several documents one after another in a row): when set, a device array of
  // B*T ints, doc_start[b*T + t] = the position in row b where token t's document begins.
  // Attention then stays within each document (keys doc_start..t) and rope() counts positions
  // from the document's start. Null: one document per row.
  const int32_t* doc_start = nullptr;
  int qkv_stride() const { return (H + 2 * Hkv) * D; }
};

// Several sequences in one inference step. Sequence i owns rows [row0[i], row0[i] + n[i]) of
// the step's qkv/out buffers, its new tokens sit at positions pos0[i], pos0[i] + 1, ..., and
// its caches start slot[i] * slot_stride floats past the kcache/vcache pointers. The arrays
// are host memory (a few ints per sequence).
struct KvBatch {
  const int32_t* slot = nullptr;
  const int32_t* pos0 = nullptr;
  const int32_t* n = nullptr;
  const int32_t* row0 = nullptr;
  int count = 0;
  size_t slot_stride = 0;
};

// Weights stored for inference. Q8 and Q4 quantize each row in blocks of kQBlock values along
// K with one scale per block (w = scale * q; the values of GGUF q8_0 / q4_0). In memory the
// rows are grouped in panels of kQPanel (the last one padded with q = 0, scale 0) and stored
// unsigned, interleaved so that one 64-byte load gives 4 consecutive k of all 16 rows:
//   Q8: per panel K * 16 bytes; (row r, k) at (k / 4) * 64 + r * 4 + k % 4, holding q + 128.
//   Q4: per panel K * 8 bytes; block b is 4 chunks of 64 bytes; chunk c's byte r * 4 + i holds
//       q + 8 of (r, k = 32b + 8c + i) in its low nibble and of (r, k + 4) in its high one.
//   scale: per panel (K / kQBlock) * 16 floats, (r, block b) at b * 16 + r.
// F32 is packed for the matmul kernel: panels of kF32Panel rows, k-major inside a panel
// (value (n, k) at panel n / 16, offset k * 16 + n % 16; the last panel padded with zeros).
enum class WType : uint8_t { F32 = 0, Q8 = 1, Q4 = 2 };
inline constexpr int kQBlock = 32;
inline constexpr int kQPanel = 16;
inline constexpr int kF32Panel = 16;
struct WMatrix {
  WType type = WType::F32;
  int N = 0, K = 0;              // rows (outputs) and columns (inputs); K % kQBlock == 0 if quantized
  const void* data = nullptr;    // F32: (ceil(N/16), K, 16) floats; Q8/Q4: see above
  const float* scale = nullptr;  // Q8/Q4: (ceil(N/16), K / kQBlock, 16)
};
// Scratch that wmatmul_forward needs for M rows of K inputs: the activations quantized to int8,
// and per block their scale and an offset correction.
inline size_t wmatmul_scratch_bytes(int M, int K) {
  return (size_t)M * K + 2 * (size_t)M * (K / kQBlock) * 4 + 3 * 64;
}

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The precision the matmuls multiply in: "fp32", or "bf16" (inputs rounded to bf16, fp32
  // accumulation and storage). The conformance suite picks its tolerances from it.
  virtual std::string matmul_precision() const { return "fp32"; }
  // The hardware and kernels this backend runs on, one line for run headers and benchmarks
  // (for the CPU: the CPU model, its vector ISA and the GEMM provider and core).
  virtual std::string describe() const { return name() + " (" + matmul_precision() + " matmuls)"; }

  // ---- memory --------------------------------------------------------------------------
  virtual void* alloc(size_t bytes) = 0;  // zero-filled, aligned to 64 bytes
  virtual void release(void* ptr) = 0;
  virtual void to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* ptr, size_t bytes) = 0;
  virtual void synchronize() = 0;

  // ---- embedding -----------------------------------------------------------------------
  virtual void embedding_forward(float* out,             // (N, C)
                                 const int32_t* tokens,  // (N)
                                 const float* table,     // (V, C)
                                 int N, int C) = 0;
  virtual void embedding_backward(float* dtable,          // (V, C) += scatter of dout
                                  const float* dout,      // (N, C)
                                  const int32_t* tokens,  // (N)
                                  int N, int C) = 0;

  // ---- rmsnorm: out = x / sqrt(mean(x^2) + eps) * w ------------------------------------
  virtual void rmsnorm_forward(float* out,      // (N, C)
                               float* rstd,     // (N) saved for backward
                               const float* x,  // (N, C)
                               const float* w,  // (C)
                               int N, int C, float eps) = 0;
  virtual void rmsnorm_backward(float* dx,          // (N, C) written
                                float* dw,          // (C) accumulated
                                const float* dout,  // (N, C)
                                const float* x,     // (N, C)
                                const float* w,     // (C)
                                const float* rstd,  // (N)
                                int N, int C) = 0;

  // ---- residual add fused with the RMSNorm after it ---------------------------------------
  // sum = a + b (sum may alias a or b), then out = rmsnorm(sum) as rmsnorm_forward computes it:
  // the same values as add() followed by rmsnorm_forward(), and the default makes exactly
  // those two calls (the CPU keeps it: a pass over the rows costs little there). A GPU backend
  // overrides it with one kernel, which saves a launch and a pass over the activations.
  virtual void add_rmsnorm_forward(float* sum,      // (N, C) written
                                   float* out,      // (N, C)
                                   float* rstd,     // (N) saved for backward
                                   const float* a,  // (N, C)
                                   const float* b,  // (N, C)
                                   const float* w,  // (C)
                                   int N, int C, float eps) {
    add(sum, a, b, (size_t)N * C);
    rmsnorm_forward(out, rstd, sum, w, N, C, eps);
  }

  // ---- matmul: out = x · Wᵀ -------------------------------------------------------------
  virtual void matmul_forward(float* out,      // (M, N)
                              const float* x,  // (M, K)
                              const float* w,  // (N, K)
                              int M, int N, int K) = 0;
  virtual void matmul_backward(float* dx,          // (M, K) written
                               float* dw,          // (N, K) accumulated
                               const float* dout,  // (M, N)
                               const float* x,     // (M, K)
                               const float* w,     // (N, K)
                               int M, int N, int K) = 0;

  // ---- rotary embedding (rotate-half, Hugging Face Llama convention), in place ------------
  // Rotates the q and k parts of a fused qkv buffer; token n of batch row b sits at position
  // pos0 + t where t = n % T. inverse=true applies the transpose rotation (the backward).
  virtual void rope(float* qkv,  // (B, T, qkv_stride)
                    const AttnShape& s, int pos0, float theta, bool inverse) = 0;

  // ---- causal grouped-query attention -----------------------------------------------------
  virtual void attention_forward(float* out,        // (B, T, H, D)
                                 float* lse,        // (B, H, T) log-sum-exp saved for backward
                                 const float* qkv,  // (B, T, qkv_stride)
                                 const AttnShape& s) = 0;
  virtual void attention_backward(float* dqkv,        // (B, T, qkv_stride) written
                                  const float* dout,  // (B, T, H, D)
                                  const float* qkv,   // (B, T, qkv_stride)
                                  const float* out,   // (B, T, H, D)
                                  const float* lse,   // (B, H, T)
                                  const AttnShape& s) = 0;

  // ---- SwiGLU: out = silu(gate) * up, gate and up side by side in one row -----------------
  virtual void swiglu_forward(float* out,           // (N, F)
                              const float* gateup,  // (N, 2F) = [gate | up]
                              int N, int F) = 0;
  virtual void swiglu_backward(float* dgateup,       // (N, 2F) written
                               const float* dout,    // (N, F)
                               const float* gateup,  // (N, 2F)
                               int N, int F) = 0;

  // ---- residual: out = a + b (out may alias a or b) ---------------------------------------
  virtual void add(float* out, const float* a, const float* b, size_t n) = 0;

  // ---- cross-entropy with fused softmax ----------------------------------------------------
  // losses[n] = -log softmax(logits[n])[targets[n]]; targets[n] < 0 masks the row (loss 0,
  // zero gradient). If dlogits is non-null it receives dscale * (softmax - onehot); it may
  // alias logits.
  virtual void cross_entropy(float* losses,           // (N)
                             float* dlogits,          // (N, V) or null
                             const float* logits,     // (N, V)
                             const int32_t* targets,  // (N)
                             int N, int V, float dscale) = 0;
  // The same per row, with a weight per row instead of one scale (a policy-gradient objective
  // weighs each token by its advantage; the weights may be negative) and, when `entropies` is
  // non-null, the entropy of each row's softmax: entropies[n] = -sum_v p_v log p_v (0 for a
  // masked row). dlogits (null or aliasing logits as above) receives
  // weights[n] * (softmax - onehot).
  virtual void cross_entropy_rows(float* losses,           // (N)
                                  float* entropies,        // (N) or null
                                  float* dlogits,          // (N, V) or null
                                  const float* logits,     // (N, V)
                                  const int32_t* targets,  // (N)
                                  const float* weights,    // (N); read only with dlogits
                                  int N, int V) = 0;

  // ---- optimizer and gradient utilities -----------------------------------------------------
  // AdamW with decoupled weight decay: p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p).
  virtual void adamw(float* p, float* m, float* v,  // (n) updated in place
                     const float* g,                // (n)
                     size_t n, float lr, float beta1, float beta2, float eps, float wd,
                     int64_t t) = 0;
  // Sum of squares in double, with a fixed reduction order.
  virtual double sum_squares(const float* x, size_t n) = 0;
  virtual void scale(float* x, size_t n, float s) = 0;
  // True when every value is finite.
  virtual bool all_finite(const float* x, size_t n) = 0;

  // ---- inference: attention of new tokens over a KV cache ----------------------------------
  // qkv holds n new tokens at positions pos0..pos0+n-1 (rope already applied). Their k and v
  // are appended to the caches at those positions, then each query attends causally to
  // cache positions 0..pos.
  virtual void attention_kv_forward(float* out,        // (n, H, D)
                                    float* kcache,     // (Tmax, Hkv, D)
                                    float* vcache,     // (Tmax, Hkv, D)
                                    const float* qkv,  // (n, qkv_stride)
                                    const AttnShape& s, int pos0, int n) = 0;

  // ---- inference: several sequences per step ----------------------------------------------
  // rope() for every row of a batch, each sequence at its own positions; the same values as
  // rope() on that sequence alone.
  virtual void rope_batch(float* qkv,  // (rows, qkv_stride)
                          const AttnShape& s, const KvBatch& b, float theta) = 0;
  // attention_kv_forward() for every sequence of a batch in one call (one parallel launch
  // instead of one per sequence); each sequence's result is the same as alone.
  virtual void attention_kv_batch(float* out,        // (rows, H, D)
                                  float* kcache,     // per slot: (Tmax, Hkv, D)
                                  float* vcache,     // per slot: (Tmax, Hkv, D)
                                  const float* qkv,  // (rows, qkv_stride)
                                  const AttnShape& s, const KvBatch& b) = 0;

  // ---- inference: matmul against stored weights, out = x · Wᵀ -------------------------------
  // For Q8/Q4 each row of x is quantized to int8 in blocks of kQBlock (scale = max|x| / 127)
  // into `scratch` (wmatmul_scratch_bytes), and blocks are multiplied in integers. Every output
  // element goes through the same operations whatever M is and whichever rows share the call,
  // so a sequence's result does not depend on what it is batched with.
  virtual void wmatmul_forward(float* out,        // (M, N)
                               const float* x,    // (M, K)
                               const WMatrix& w,  // (N, K)
                               int M, void* scratch) = 0;
};

// Registry: backends by name ("cpu"; "cuda" and "cuda-fp32" when built with CUDA). threads <= 0
// picks all cores (the CPU backend's thread count; GPU backends ignore it).
std::unique_ptr<Backend> make_backend(const std::string& name, int threads);
std::vector<std::string> backend_names();

}  // namespace tandem
