// Next-token sampling: greedy, or temperature with optional top-k and top-p (nucleus)
// filtering. Draws are counter-based on (seed, position), so a seed reproduces a sample.
#pragma once

#include <cstdint>
#include <span>

namespace tandem {

struct SamplingParams {
  float temperature = 1.0f;  // 0 means greedy
  int top_k = 0;             // 0 disables
  float top_p = 1.0f;        // 1 disables
  uint64_t seed = 0;
};

int32_t sample_token(std::span<const float> logits, const SamplingParams& p, uint64_t position);
int32_t argmax(std::span<const float> logits);

}  // namespace tandem
