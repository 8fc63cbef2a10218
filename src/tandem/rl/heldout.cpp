// HeldOutEval (see heldout.h).
#include "tandem/rl/heldout.h"

#include <algorithm>

#include "tandem/backend/backend.h"
#include "tandem/data/chat.h"
#include "tandem/data/tokenizer.h"
#include "tandem/infer/engine.h"
#include "tandem/model/llama.h"
#include "tandem/rl/rollout.h"
#include "tandem/train/events.h"

namespace tandem {

HeldOutEval::HeldOutEval(const std::string& path, int limit, const VerifierSpec& verifier,
                         const Tokenizer& tok, int row_tokens, int max_new, const std::string& who)
    : verifier_(make_verifier(verifier)), tok_(tok), max_new_(max_new) {
  prompts_ = load_prompts(path, tok, row_tokens, max_new, who, limit);
  stops_ = {tok.eos_id()};
  if (has_chat_format(tok)) stops_.push_back(tok.piece_id(kTurnEnd));
}

double HeldOutEval::run(Llama& model, const std::function<void()>& beat, EventLog* events) const {
  Backend& be = model.backend();
  std::vector<float> host(model.num_params());
  be.to_host(host.data(), model.params(), host.size() * sizeof(float));
  InferModel im(model.config(), host.data(), be, WType::F32);
  GenerateOptions go;
  go.max_new = max_new_;
  go.slots = std::min<int>((int)prompts_.size(), 64);
  go.sampling.temperature = 0;  // greedy: the policy's best answer
  go.stops = stops_;
  std::vector<const std::vector<int32_t>*> reqs;
  for (const Prompt& p : prompts_) reqs.push_back(&p.tokens);
  std::vector<Completion> outs =
      generate(im, reqs, std::vector<uint64_t>(reqs.size(), 0), go, beat);
  std::vector<Sample> samples;
  for (size_t i = 0; i < outs.size(); ++i) {
    if (outs[i].finished) outs[i].tokens.pop_back();
    samples.push_back({prompts_[i].text, tok_.decode(outs[i].tokens), prompts_[i].reference});
  }
  std::string why;
  const std::vector<double> r = verifier_->score(samples, &why);
  if (!why.empty() && events)
    events->emit("verifier_failed", {{"verifier", verifier_->name()}, {"reason", why},
                                     {"during", "evaluation"}, {"action", "scored 0"}});
  double sum = 0;
  for (double x : r) sum += x;
  return r.empty() ? 0.0 : sum / (double)r.size();
}

SftExactMatch::SftExactMatch(const RunConfig& cfg, const Tokenizer& tok) {
  VerifierSpec v;
  v.kind = v.name = cfg.sft.eval_verifier;
  v.pattern = cfg.sft.eval_pattern;
  eval_ = std::make_unique<HeldOutEval>(cfg.sft.eval_prompts, cfg.sft.eval_limit, v, tok,
                                        cfg.model.context, cfg.sft.eval_max_new_tokens, "sft");
}

SftExactMatch::~SftExactMatch() = default;

nlohmann::json SftExactMatch::run(Llama& model, const std::function<void()>& beat,
                                  EventLog* events) {
  return {{"val_exact_match", eval_->run(model, beat, events)}};
}

}  // namespace tandem
