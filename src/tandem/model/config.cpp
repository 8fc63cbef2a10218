// Validation and counting for ModelConfig.
#include "tandem/model/config.h"

#include <sstream>

#include "tandem/core/error.h"

namespace tandem {

void ModelConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) fail("[config] model." + what);
  };
  need(dim > 0, "dim must be positive");
  need(n_layers > 0, "n_layers must be positive");
  need(n_heads > 0, "n_heads must be positive");
  need(dim % n_heads == 0, "dim must be divisible by n_heads");
  need(head_dim() % 2 == 0, "dim / n_heads must be even (rotary embedding)");
  need(n_kv_heads > 0 && n_heads % n_kv_heads == 0, "n_kv_heads must divide n_heads");
  need(hidden_dim > 0, "hidden_dim must be positive");
  need(vocab_size > 0, "vocab_size must be positive");
  need(context > 0, "context must be positive");
  need(rope_theta > 0, "rope_theta must be positive");
  need(norm_eps > 0, "norm_eps must be positive");
}

int64_t ModelConfig::matmul_params() const {
  int64_t C = dim, F = hidden_dim, D = head_dim();
  int64_t per_layer = C * qkv_dim() + (int64_t)n_heads * D * C + 3 * C * F;
  return n_layers * per_layer + (int64_t)vocab_size * C;
}

int64_t ModelConfig::num_params() const {
  int64_t C = dim;
  int64_t norms = (2 * n_layers + 1) * C;
  int64_t extra_embed = tie_embeddings ? 0 : (int64_t)vocab_size * C;
  return matmul_params() + norms + extra_embed;
}

double ModelConfig::train_flops_per_token(int T) const {
  return 6.0 * matmul_params() + 12.0 * n_layers * dim * (double)T;
}

std::string ModelConfig::summary() const {
  std::ostringstream s;
  s << "model: dim " << dim << ", layers " << n_layers << ", heads " << n_heads << "/" << n_kv_heads
    << " (q/kv), hidden " << hidden_dim << ", vocab " << vocab_size << ", context " << context
    << (tie_embeddings ? ", tied" : ", untied") << " embeddings\n"
    << "parameters: " << num_params() << " (" << num_params() / 1e6 << " M)\n"
    << "training FLOPs per token at context " << context << ": "
    << train_flops_per_token(context) / 1e6 << " MFLOP (forward "
    << train_flops_per_token(context) / 3e6 << " MFLOP)";
  return s.str();
}

}  // namespace tandem
