// The Llama-style decoder on a Backend: parameters, gradients and activations each live in one
// device buffer sized before training; forward() and backward() only call backend kernels.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "tandem/backend/backend.h"
#include "tandem/model/config.h"
#include "tandem/model/params.h"

namespace tandem {

class Llama {
 public:
  Llama(const ModelConfig& cfg, Backend& be);
  ~Llama();
  Llama(const Llama&) = delete;
  Llama& operator=(const Llama&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const ParamLayout& layout() const { return layout_; }
  Backend& backend() { return be_; }
  float* params() { return params_; }  // device, layout().total floats
  float* grads() { return grads_; }    // device, same layout; allocated on first use
  size_t num_params() const { return layout_.total; }

  void init(uint64_t seed);
  void load_params(const float* host);
  void save_params(float* host);
  void zero_grads();

  // Sizes the activation buffer for micro-batches of B sequences of T tokens (T <= context).
  void reserve(int B, int T);

  // Forward pass over tokens (host, B*T) up to the logits (device, B*T*V). `doc_start`
  // (host, B*T; null: one sequence per row): packed rows, each token's document start within
  // its row (AttnShape::doc_start); attention stays within documents, positions restart. The
  // backward uses the same packing.
  void forward(const int32_t* tokens, int B, int T, const int32_t* doc_start = nullptr);
  const float* logits() const { return logits_; }
  // Cross-entropy of the logits against targets (host, B*T; < 0 masks a position). Returns the
  // summed loss in double. With grad=true the logits are replaced by dscale * dloss/dlogits.
  double loss(const int32_t* targets, float dscale, bool grad);
  // For objectives that weigh each position (policy gradients): the logits are first scaled
  // by `logit_scale` (1 / sampling temperature), then -log p of each target and, when
  // `entropies` is set, each position's softmax entropy go to the host (B*T each; 0 where the
  // target is < 0). weighted_loss_grad then replaces the logits by the gradient of
  // sum_n weights[n] * loss_n with respect to the scaled logits (host weights, B*T): the caller
  // folds logit_scale into the weights for the gradient of the unscaled ones.
  void token_logprobs(const int32_t* targets, float* neg_logp, float* entropies,
                      float logit_scale = 1.f);
  void weighted_loss_grad(const float* weights);
  // Backward pass after loss(grad=true) or weighted_loss_grad: adds parameter gradients into grads(). `ready`, when
  // set, is called as soon as a block's gradients are final, in backward order: n_layers (the
  // final norm, and the untied lm_head), then each layer from the last to 0, then -1 (the
  // embedding, which a tied lm_head also writes): a data-parallel run reduces them meanwhile.
  void backward(const std::function<void(int)>& ready = nullptr);

 private:
  struct Acts;  // activation tensors carved from one buffer
  float* p(size_t offset) { return params_ + offset; }
  float* g(size_t offset) { return grads_ + offset; }
  AttnShape attn_shape() const;

  ModelConfig cfg_;
  Backend& be_;
  ParamLayout layout_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  float* acts_ = nullptr;
  float* logits_ = nullptr;
  int32_t* tokens_dev_ = nullptr;
  int32_t* targets_dev_ = nullptr;
  int32_t* doc_start_dev_ = nullptr;
  bool packed_ = false;
  std::vector<float> losses_host_;
  Acts* a_ = nullptr;
  int B_ = 0, T_ = 0, cap_tokens_ = 0;
};

}  // namespace tandem
