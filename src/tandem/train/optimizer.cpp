// AdamW and gradient clipping through backend kernels.
#include "tandem/train/optimizer.h"

#include <cmath>

namespace tandem {

AdamW::AdamW(Llama& model, float beta1, float beta2, float eps, float weight_decay)
    : model_(model), beta1_(beta1), beta2_(beta2), eps_(eps), wd_(weight_decay) {
  size_t bytes = model.num_params() * sizeof(float);
  m_ = static_cast<float*>(model.backend().alloc(bytes));
  v_ = static_cast<float*>(model.backend().alloc(bytes));
}

AdamW::~AdamW() {
  model_.backend().release(m_);
  model_.backend().release(v_);
}

void AdamW::step(float lr, int64_t t) {
  Backend& be = model_.backend();
  const ParamLayout& L = model_.layout();
  float *p = model_.params(), *g = model_.grads();
  be.adamw(p, m_, v_, g, L.decayed, lr, beta1_, beta2_, eps_, wd_, t);
  be.adamw(p + L.decayed, m_ + L.decayed, v_ + L.decayed, g + L.decayed, L.total - L.decayed, lr,
           beta1_, beta2_, eps_, 0.0f, t);
}

double grad_norm(Llama& model) {
  return std::sqrt(model.backend().sum_squares(model.grads(), model.num_params()));
}

void clip_grads(Llama& model, double norm, float clip) {
  if (clip > 0 && norm > clip)
    model.backend().scale(model.grads(), model.num_params(), (float)(clip / norm));
}

double clip_grad_norm(Llama& model, float clip) {
  double norm = grad_norm(model);
  clip_grads(model, norm, clip);
  return norm;
}

}  // namespace tandem
