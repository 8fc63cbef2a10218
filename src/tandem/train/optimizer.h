// AdamW over the model's parameter buffer: fp32 moments in two device buffers with the same
// layout as the parameters; weight decay only on tensors marked for it (not norms).
#pragma once

#include <cstdint>

#include "tandem/model/llama.h"

namespace tandem {

class AdamW {
 public:
  AdamW(Llama& model, float beta1, float beta2, float eps, float weight_decay);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;

  // Applies one update with learning rate lr; t is the 1-based step for bias correction.
  void step(float lr, int64_t t);
  float* m() { return m_; }
  float* v() { return v_; }

 private:
  Llama& model_;
  float beta1_, beta2_, eps_, wd_;
  float* m_;
  float* v_;
};

// Global L2 norm of the gradients; if clip > 0 and the norm exceeds it, scales them down.
// Returns the norm before clipping.
double clip_grad_norm(Llama& model, float clip);
// The two halves of clip_grad_norm, for callers that judge the norm before applying the clip.
double grad_norm(Llama& model);
void clip_grads(Llama& model, double norm, float clip);

}  // namespace tandem
