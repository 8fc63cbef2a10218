// Parameter layout and initialization.
#include "tandem/model/params.h"

#include <cmath>

#include "tandem/core/rng.h"

namespace tandem {

ParamLayout::ParamLayout(const ModelConfig& cfg) {
  const int64_t C = cfg.dim, F = cfg.hidden_dim, D = cfg.head_dim();
  const int64_t H = cfg.n_heads, Hkv = cfg.n_kv_heads, V = cfg.vocab_size;
  // Tensors are listed in Hugging Face order; offsets put every decayed weight first and the
  // norms last, so the optimizer covers the buffer in two contiguous ranges.
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
    TensorInfo t;
    t.name = name;
    t.shape = shape;
    t.numel = 1;
    for (auto d : shape) t.numel *= d;
    t.decay = decay;
    tensors.push_back(t);
  };
  add("model.embed_tokens.weight", {V, C}, true);
  for (int l = 0; l < cfg.n_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {C}, false);
    add(p + "self_attn.q_proj.weight", {H * D, C}, true);
    add(p + "self_attn.k_proj.weight", {Hkv * D, C}, true);
    add(p + "self_attn.v_proj.weight", {Hkv * D, C}, true);
    add(p + "self_attn.o_proj.weight", {C, H * D}, true);
    add(p + "post_attention_layernorm.weight", {C}, false);
    add(p + "mlp.gate_proj.weight", {F, C}, true);
    add(p + "mlp.up_proj.weight", {F, C}, true);
    add(p + "mlp.down_proj.weight", {C, F}, true);
  }
  add("model.norm.weight", {C}, false);
  if (!cfg.tie_embeddings) add("lm_head.weight", {V, C}, true);
  for (bool decay : {true, false})
    for (auto& t : tensors)
      if (t.decay == decay) {
        t.offset = total;
        total += t.numel;
        if (decay) decayed = total;
      }
  auto at = [&](const std::string& name) { return find(name)->offset; };
  embed = at("model.embed_tokens.weight");
  for (int l = 0; l < cfg.n_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    layers.push_back({at(p + "input_layernorm.weight"), at(p + "self_attn.q_proj.weight"),
                      at(p + "self_attn.o_proj.weight"), at(p + "post_attention_layernorm.weight"),
                      at(p + "mlp.gate_proj.weight"), at(p + "mlp.down_proj.weight")});
  }
  final_norm = at("model.norm.weight");
  lm_head = cfg.tie_embeddings ? embed : at("lm_head.weight");
}

const TensorInfo* ParamLayout::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

void init_params(float* host, const ParamLayout& layout, const ModelConfig& cfg, uint64_t seed) {
  const float std_base = 0.02f;
  const float std_resid = std_base / std::sqrt(2.0f * cfg.n_layers);
  for (const auto& t : layout.tensors) {
    float* p = host + t.offset;
    if (!t.decay) {  // norm weights
      for (size_t i = 0; i < t.numel; ++i) p[i] = 1.0f;
      continue;
    }
    bool resid =
        t.name.find("o_proj") != std::string::npos || t.name.find("down_proj") != std::string::npos;
    float sd = resid ? std_resid : std_base;
    for (size_t i = 0; i < t.numel; ++i) p[i] = sd * rng_normal(seed, kStreamInit, t.offset + i);
  }
}

}  // namespace tandem
