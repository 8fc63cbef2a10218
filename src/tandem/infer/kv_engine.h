// Incremental decoding with a KV cache: a prompt is processed once, then each new token costs
// one forward over a single position. Uses the model's weights and the backend kernel set.
#pragma once

#include <cstdint>
#include <vector>

#include "tandem/model/llama.h"

namespace tandem {

class KvEngine {
 public:
  // Capacity for sequences up to max_seq tokens (<= model context).
  KvEngine(Llama& model, int max_seq);
  ~KvEngine();
  KvEngine(const KvEngine&) = delete;
  KvEngine& operator=(const KvEngine&) = delete;

  void reset() { pos_ = 0; }
  int position() const { return pos_; }
  int capacity() const { return max_seq_; }
  // Appends n tokens at the current position and returns the logits (host, V floats) that
  // predict the token after the last one.
  const std::vector<float>& feed(const int32_t* tokens, int n);

 private:
  Llama& model_;
  Backend& be_;
  int max_seq_, pos_ = 0;
  float* buf_ = nullptr;  // activations for up to max_seq tokens, and the caches
  float *x_, *ln_, *qkv_, *att_, *h_, *gateup_, *act_, *logits_, *rstd_;
  std::vector<float*> kcache_, vcache_;
  int32_t* tokens_dev_ = nullptr;
  std::vector<float> logits_host_;
};

}  // namespace tandem
