// Shared helpers for the whole-model tests: small configs, weights with non-trivial scale,
// reproducible token batches, and one training step (forward, loss, backward) read to host.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "tandem/backend/backend.h"
#include "tandem/core/rng.h"
#include "tandem/model/config.h"
#include "tandem/model/llama.h"

namespace tandem::test {

struct ModelCase {
  std::string name;
  ModelConfig cfg;
};
// gtest prints parameters in test names and failures; the name says which case it is.
inline void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.name; }

inline ModelConfig small_config(int dim, int layers, int heads, int kv_heads, int hidden, bool tied,
                                float theta = 10000.0f, float eps = 1e-5f) {
  ModelConfig c;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.hidden_dim = hidden;
  c.vocab_size = 97;
  c.context = 32;
  c.tie_embeddings = tied;
  c.rope_theta = theta;
  c.norm_eps = eps;
  return c;
}

// Grouped-query (H/Hkv = 2) untied and tied, plain multi-head with another theta and eps, and
// multi-query (one kv head) with a head dimension of 8.
inline std::vector<ModelCase> model_cases() {
  return {
      {"gqa_untied", small_config(64, 2, 4, 2, 96, false)},
      {"gqa_tied", small_config(64, 2, 4, 2, 96, true)},
      {"mha_untied", small_config(48, 2, 4, 4, 80, false, 500000.0f, 1e-6f)},
      {"mqa_tied", small_config(32, 3, 4, 1, 64, true)},
  };
}

// init(seed), then rescale so the test exercises the whole model: the default N(0, 0.02) makes
// attention nearly uniform and leaves norm weights at exactly one, which would hide a missing
// softmax, rope or norm-weight term. Matmul weights are scaled to std 1/sqrt(fan_in) (residual
// projections keep their relative 1/sqrt(2L)); norm weights become 1 + 0.2 N(0, 1).
inline void init_test_weights(Llama& m, uint64_t seed) {
  m.init(seed);
  std::vector<float> p(m.num_params());
  m.save_params(p.data());
  for (const auto& t : m.layout().tensors) {
    float* w = p.data() + t.offset;
    if (t.shape.size() == 1) {
      for (size_t i = 0; i < t.numel; ++i)
        w[i] = 1.0f + 0.2f * rng_normal(seed, 0x7e57, t.offset + i);
    } else {
      const float s = 1.0f / (0.02f * std::sqrt((float)t.shape[1]));
      for (size_t i = 0; i < t.numel; ++i) w[i] *= s;
    }
  }
  m.load_params(p.data());
}

struct Batch {
  int B = 2, T = 16;
  std::vector<int32_t> tokens, targets;
  int num_valid = 0;
};

// Random tokens and targets; two targets are -1 so the loss mask is exercised.
inline Batch make_batch(const ModelConfig& cfg, uint64_t seed, int B = 2, int T = 16) {
  Batch b;
  b.B = B;
  b.T = T;
  const int N = B * T;
  b.tokens.resize(N);
  b.targets.resize(N);
  for (int i = 0; i < N; ++i) {
    b.tokens[i] = (int32_t)(rng_u64(seed, kStreamData, 2 * i) % cfg.vocab_size);
    b.targets[i] = (int32_t)(rng_u64(seed, kStreamData, 2 * i + 1) % cfg.vocab_size);
  }
  b.targets[3] = -1;
  b.targets[N - 5] = -1;
  for (int32_t t : b.targets) b.num_valid += t >= 0;
  return b;
}

struct StepResult {
  std::vector<float> logits;  // (B, T, V)
  double loss = 0.0;          // mean over valid positions
  std::vector<float> grads;   // layout().total
};

// zero_grads, forward, logits to host, loss with dscale = 1/num_valid, backward, grads to host.
inline StepResult run_step(Llama& m, const Batch& b) {
  StepResult r;
  const size_t N = (size_t)b.B * b.T, V = m.config().vocab_size;
  m.zero_grads();
  m.forward(b.tokens.data(), b.B, b.T);
  r.logits.resize(N * V);
  m.backend().synchronize();
  m.backend().to_host(r.logits.data(), m.logits(), r.logits.size() * sizeof(float));
  const float dscale = 1.0f / (float)b.num_valid;
  r.loss = m.loss(b.targets.data(), dscale, true) * dscale;
  m.backward();
  r.grads.resize(m.num_params());
  m.backend().synchronize();
  m.backend().to_host(r.grads.data(), m.grads(), r.grads.size() * sizeof(float));
  return r;
}

// Mean loss of the current parameters without touching the gradients.
inline double eval_loss(Llama& m, const Batch& b) {
  m.forward(b.tokens.data(), b.B, b.T);
  return m.loss(b.targets.data(), 1.0f, false) / b.num_valid;
}

}  // namespace tandem::test
