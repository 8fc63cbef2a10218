// Held-out accuracy with a checker during a run: greedy answers to held-out prompts on the
// inference engine, from the model's current weights, scored by a verifier. GRPO's val_reward
// and SFT's val_exact_match are this.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tandem/rl/prompts.h"
#include "tandem/rl/verifier.h"
#include "tandem/ckpt/config.h"
#include "tandem/train/step.h"

namespace tandem {

class Llama;
class Tokenizer;
class EventLog;

class HeldOutEval;

// SFT's exact match ([sft] eval_prompts): metrics field val_exact_match.
class SftExactMatch final : public ExtraEval {
 public:
  SftExactMatch(const RunConfig& cfg, const Tokenizer& tok);
  ~SftExactMatch() override;
  nlohmann::json run(Llama& model, const std::function<void()>& beat, EventLog* events) override;

 private:
  std::unique_ptr<HeldOutEval> eval_;
};

class HeldOutEval {
 public:
  // Throws "[WHO] ..." for bad prompts or a bad verifier spec (before anything runs).
  HeldOutEval(const std::string& path, int limit, const VerifierSpec& verifier,
              const Tokenizer& tok, int row_tokens, int max_new, const std::string& who);
  // The mean reward of greedy answers; a verifier failure scored 0 is reported to `events`.
  double run(Llama& model, const std::function<void()>& beat, EventLog* events) const;
  size_t size() const { return prompts_.size(); }

 private:
  std::vector<Prompt> prompts_;
  std::unique_ptr<Verifier> verifier_;
  const Tokenizer& tok_;
  int max_new_;
  std::vector<int32_t> stops_;
};

}  // namespace tandem
