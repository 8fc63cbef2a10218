// The training loop: data, model, AdamW, schedule, clipping, accumulation, evaluation, the
// numerical fault guard, in-memory snapshots, asynchronous checkpoints, metrics and events for
// one run directory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tandem/ckpt/config.h"
#include "tandem/train/step.h"

namespace tandem {

class Backend;
class EventLog;
class Llama;
class Tokenizer;

struct TrainOptions {
  bool resume = false;      // continue from the newest state that verifies
  int64_t stop_after = -1;  // stop (with a checkpoint) after this many steps in total
  bool progress = true;     // live progress line on stderr
  std::optional<std::string> faults;  // fault-injection spec; unset reads TANDEM_FAULTS
  // A kind of training with its own batches and loss (GRPO), made once the model exists.
  // Called before the run directory is touched, so its bad input leaves nothing behind.
  std::function<std::unique_ptr<StepSource>(const RunConfig&, const Tokenizer&, Llama&, Backend&)>
      make_source;
  // A held-out check run with each evaluation (SFT's exact match), made as make_source is.
  std::function<std::unique_ptr<ExtraEval>(const RunConfig&, const Tokenizer&)> make_eval;
};

struct TrainResult {
  int64_t step = 0;
  double last_loss = 0, last_val_loss = -1, last_val_accuracy = -1;
  double tokens_per_s = 0;
  std::string last_checkpoint;
  int rollbacks = 0, skipped_batches = 0, transient_faults = 0;
  std::string diagnosis;  // set when the guard stopped the run (no checkpoint is written then)
  bool regroup = false;   // data parallel: stopped after a step so that a larger group forms
};

// Exit status of `tandem train` when the guard stops a run: a supervisor must not restart it.
constexpr int kExitDiagnosis = 3;
// Exit status of a rank that stopped at a step boundary for its group to re-form larger (ranks
// wait at the rendezvous): its state is in the snapshot; the supervisor restarts it at once.
constexpr int kExitRegroup = 4;

TrainResult run_training(const RunConfig& cfg, const TrainOptions& opts);

}  // namespace tandem
