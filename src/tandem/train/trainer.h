// The training loop: data, model, AdamW, schedule, clipping, accumulation, evaluation,
// metrics and checkpoints for one run directory.
#pragma once

#include <cstdint>
#include <string>

#include "tandem/train/config.h"

namespace tandem {

struct TrainOptions {
  bool resume = false;      // continue from the newest verifying checkpoint in out_dir
  int64_t stop_after = -1;  // stop (with a checkpoint) after this many steps in total
  bool progress = true;     // live progress line on stderr
};

struct TrainResult {
  int64_t step = 0;
  double last_loss = 0, last_val_loss = -1;
  double tokens_per_s = 0;
  std::string last_checkpoint;
};

TrainResult run_training(const RunConfig& cfg, const TrainOptions& opts);

}  // namespace tandem
