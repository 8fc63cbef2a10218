// GRPO as a kind of training: the StepSource of `tandem grpo`. Each batch of rollouts serves
// grpo.passes optimizer steps: at the first, prompts_per_step prompts (an epoch permutation
// of the prompt file, drawn from the seed; the run's data cursor counts prompts) get
// group_size completions each, sampled on the inference engine from the current weights with
// draws keyed by (seed, step, prompt, sample); the verifiers score them; the objective
// (objective.h) turns them into the step's loss. Between passes the rollouts travel in the run
// state, so a run resumed anywhere continues bit for bit.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tandem/ckpt/config.h"
#include "tandem/rl/heldout.h"
#include "tandem/rl/objective.h"
#include "tandem/rl/prompts.h"
#include "tandem/rl/verifier.h"
#include "tandem/train/step.h"

namespace tandem {

class Backend;
class EventLog;
class Llama;
class Tokenizer;

class GrpoSource final : public StepSource {
 public:
  // Loads the prompts, the verifiers and (beta > 0) the reference model; throws "[grpo] ..."
  // naming the file, line or key at fault.
  GrpoSource(const RunConfig& cfg, const Tokenizer& tok, Llama& model, Backend& be);
  ~GrpoSource() override;

  void set_events(EventLog* events) override { events_ = events; }
  void next_batch(int64_t step, int64_t& cursor, nlohmann::json& state, StepBatch& b,
                  const std::function<void()>& beat) override;
  void begin() override { stats_ = {}; }
  double shard_loss(Llama& model, const StepBatch& b, int a) override;
  nlohmann::json committed(nlohmann::json& state) override;
  nlohmann::json timing() const override { return timing_; }
  nlohmann::json evaluate(const std::function<void()>& beat) override;

 private:
  void rollouts(int64_t step, int64_t& cursor, const std::function<void()>& beat);
  size_t prompt_of(int64_t k) const;  // prompt file index of the run's k-th prompt
  std::vector<double> score(const std::vector<Sample>& s, std::vector<double>* format_part);

  const RunConfig& cfg_;
  const GrpoConfig& g_;
  const Tokenizer& tok_;
  Llama& model_;
  Backend& be_;
  EventLog* events_ = nullptr;
  std::vector<Prompt> prompts_;
  std::unique_ptr<HeldOutEval> val_;
  std::unique_ptr<Verifier> verifier_, format_;
  std::unique_ptr<Llama> ref_;
  GrpoObjective obj_;
  std::vector<int32_t> stops_;
  RolloutBatch batch_;
  int pass_ = 0;
  ObjectiveStats stats_;
  nlohmann::json rollout_stats_, timing_;
  mutable int64_t epoch_ = -1;
  mutable std::vector<uint32_t> perm_;
};

}  // namespace tandem
