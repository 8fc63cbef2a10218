// Model hyperparameters of the Llama-style decoder, with its parameter and FLOP counts.
#pragma once

#include <cstdint>
#include <string>

namespace tandem {

struct ModelConfig {
  int dim = 0;         // model width C
  int n_layers = 0;    // transformer blocks L
  int n_heads = 0;     // query heads H
  int n_kv_heads = 0;  // key/value heads Hkv (divides H)
  int hidden_dim = 0;  // SwiGLU hidden width F
  int vocab_size = 0;  // V
  int context = 0;     // longest sequence the model is trained or run on
  bool tie_embeddings = true;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;

  int head_dim() const { return dim / n_heads; }
  int qkv_dim() const { return (n_heads + 2 * n_kv_heads) * head_dim(); }
  // Throws Error naming the first field that is out of range.
  void validate() const;
  int64_t num_params() const;
  // Parameters that take part in a matmul per token (everything but the norms; the embedding
  // counts once, as the output projection).
  int64_t matmul_params() const;
  // Training FLOPs per token at sequence length T: 6 per matmul parameter plus attention's
  // 12 * L * C * T (the usual MFU convention, which counts the full T x T score matrix).
  double train_flops_per_token(int T) const;
  std::string summary() const;
};

}  // namespace tandem
