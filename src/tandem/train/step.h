// The phases of one training step that every kind of training shares: the batch (A
// micro-batches of B x T tokens, targets < 0 masked out of the loss), forward and backward over
// the shards this rank computes, and the reduction of their gradients over the ranks. The loop
// (trainer.cpp) judges the result and commits it; fault injection that acts inside the step
// lives here too, so a test can corrupt exactly one phase.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

namespace tandem {

class Backend;
class EventLog;
class FaultPlan;
class GradReducer;
class Llama;
class RankGroup;

// The global batch of one step.
struct StepBatch {
  int A = 1, B = 1, T = 1;               // micro-batches, rows per micro-batch, tokens per row
  std::vector<int32_t> inputs, targets;  // A * B * T each, micro-batch after micro-batch
  std::vector<int32_t> doc_start;        // packed rows (AttnShape::doc_start); empty: none
  void resize(int a, int b, int t);
  const int32_t* inputs_of(int a) const { return inputs.data() + (size_t)a * B * T; }
  const int32_t* targets_of(int a) const { return targets.data() + (size_t)a * B * T; }
  const int32_t* doc_start_of(int a) const {
    return doc_start.empty() ? nullptr : doc_start.data() + (size_t)a * B * T;
  }
  int64_t valid() const;  // targets that count in the loss
};

// A kind of training's own batches and loss (GRPO: rollouts and the policy-gradient
// objective); without one, a step is cross-entropy over the run's data (pre-training, SFT).
// The loop stays the same: judge, commit, record, snapshot and resume go through it.
class StepSource {
 public:
  virtual ~StepSource() = default;
  // Where the source reports what happens to it (a verifier that failed), once the log exists.
  virtual void set_events(EventLog* events) = 0;
  // The batch of step `step`, drawn from the model's current parameters. `cursor` is the run's
  // data cursor (advanced by what the batch consumed); `state` is the source's part of the run
  // state (RunState::source: in every snapshot and checkpoint), read and rewritten here.
  virtual void next_batch(int64_t step, int64_t& cursor, nlohmann::json& state, StepBatch& b,
                          const std::function<void()>& beat) = 0;
  // Called before each computation of the step's loss (a replay computes it again).
  virtual void begin() = 0;
  // After the model's forward over micro-batch `a`: leaves dloss/dlogits in the logits and
  // returns the micro-batch's part of the step's loss.
  virtual double shard_loss(Llama& model, const StepBatch& b, int a) = 0;
  // After the step is committed: what metrics.jsonl records of it (deterministic), and its
  // state for the next step.
  virtual nlohmann::json committed(nlohmann::json& state) = 0;
  // Wall-clock figures of the step for timing.jsonl.
  virtual nlohmann::json timing() const = 0;
  // Held-out evaluation every train.eval_every steps (metrics.jsonl); null when none.
  virtual nlohmann::json evaluate(const std::function<void()>& beat) = 0;
};

// A held-out check at every evaluation besides the loss (SFT: exact match by a verifier).
class ExtraEval {
 public:
  virtual ~ExtraEval() = default;
  // Fields for metrics.jsonl.
  virtual nlohmann::json run(Llama& model, const std::function<void()>& beat, EventLog* events) = 0;
};

struct StepResult {
  double loss = 0;       // mean over the valid targets of the whole global batch
  double grad_norm = 0;  // of the summed gradient (in model.grads() on every rank)
};

class StepComputer {
 public:
  StepComputer(Llama& model, Backend& be, GradReducer& reducer, FaultPlan& faults,
               EventLog& events, uint64_t seed);
  // Forward and backward over this rank's shards, then their exact sum over the ranks; a step
  // whose gradients left the fixed-point window is computed again with refitted scales.
  // `grad_exp`: the scales to start from. `inject`: this computation may fire faults of the
  // step; `replay`: it recomputes a step (slow_replay delays it).
  // `source`: its loss instead of cross-entropy (the step's loss is then the sum of its
  // shards' parts, each already normalised).
  StepResult run(const StepBatch& b, int64_t step, const std::vector<int>& grad_exp,
                 bool inject, bool replay, const std::function<void()>& beat,
                 StepSource* source = nullptr);

  // Fault injection. A nonzero element of a device array whose bit `bit` is clear (so that
  // flipping it sets the bit), from a place chosen by the step.
  size_t pick(const float* dev, size_t n, int64_t step, int bit) const;
  // Garbage tokens in place of the batch: a loss spike.
  void garble(StepBatch& b, int64_t salt, int vocab) const;

 private:
  Llama& model_;
  Backend& be_;
  GradReducer& reducer_;
  FaultPlan& faults_;
  EventLog& events_;
  uint64_t seed_;
};

struct EvalResult {
  double loss = 0;       // mean over the valid targets
  double accuracy = -1;  // share of valid targets that are the argmax (-1: not measured)
};
// The validation loss over `batches` batches of B x T: batch i on rank i % world, summed in
// batch order on every rank. `fill(i, inputs, targets)` draws batch i. With `accuracy`, also
// the token accuracy (the logits are read back to the host for it).
EvalResult evaluate(Llama& model, const RankGroup& group, int batches, int B, int T,
                    const std::function<void(int64_t, int32_t*, int32_t*)>& fill,
                    const std::function<void()>& beat, bool accuracy = false);

}  // namespace tandem
