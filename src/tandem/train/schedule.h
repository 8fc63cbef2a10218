// Learning-rate schedule: linear warmup to lr, then cosine decay to min_lr at max_steps.
#pragma once

#include <cmath>
#include <cstdint>

namespace tandem {

inline float lr_at(int64_t step, float lr, float min_lr, int64_t warmup, int64_t max_steps) {
  if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
  if (max_steps <= warmup) return lr;
  double progress = (double)(step - warmup) / (double)(max_steps - warmup);
  if (progress > 1.0) progress = 1.0;
  return (float)(min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace tandem
