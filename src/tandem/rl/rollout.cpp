// generate(): continuous batching over the BatchEngine (see rollout.h).
#include "tandem/rl/rollout.h"

#include <algorithm>
#include <span>

#include "tandem/core/error.h"
#include "tandem/infer/engine.h"

namespace tandem {

std::vector<Completion> generate(InferModel& model,
                                 const std::vector<const std::vector<int32_t>*>& prompts,
                                 const std::vector<uint64_t>& seeds, const GenerateOptions& o,
                                 const std::function<void()>& beat, GenerateStats* stats) {
  TANDEM_CHECK(prompts.size() == seeds.size(), "a seed per prompt");
  std::vector<Completion> out(prompts.size());
  if (prompts.empty()) return out;
  const int ctx = model.config().context, V = model.config().vocab_size;
  size_t longest = 0;
  for (const auto* p : prompts) longest = std::max(longest, p->size());
  if ((int)longest + o.max_new > ctx)
    fail("[engine] a prompt of " + std::to_string(longest) + " tokens and " +
         std::to_string(o.max_new) + " new tokens pass the model context of " +
         std::to_string(ctx));
  const int slots = std::max(1, std::min<int>(o.slots, (int)prompts.size()));
  EngineOptions eo;
  eo.slots = slots;
  eo.max_seq = (int)longest + o.max_new;
  eo.max_step_tokens = slots * eo.max_seq;
  eo.max_logit_rows = slots;
  BatchEngine eng(model, eo);
  struct Slot {
    int req = -1;
    bool fed = false;
    int32_t last = 0;
  };
  std::vector<Slot> sl((size_t)slots);
  size_t next = 0, done = 0;
  std::vector<BatchEngine::Item> items;
  std::vector<int> who;
  while (done < prompts.size()) {
    items.clear();
    who.clear();
    for (int s = 0; s < slots; ++s) {
      Slot& x = sl[(size_t)s];
      if (x.req < 0 && next < prompts.size()) {
        x = Slot{(int)next++, false, 0};
        eng.reset(s);
      }
      if (x.req < 0) continue;
      const std::vector<int32_t>& p = *prompts[(size_t)x.req];
      items.push_back(x.fed ? BatchEngine::Item{s, &x.last, 1, false}
                            : BatchEngine::Item{s, p.data(), (int)p.size(), false});
      if (stats && !x.fed) stats->prompt_tokens += (int64_t)p.size();
      x.fed = true;
      who.push_back(s);
    }
    const float* lg = eng.step(items);
    if (stats) ++stats->engine_steps;
    for (size_t k = 0; k < who.size(); ++k) {
      Slot& x = sl[(size_t)who[k]];
      Completion& c = out[(size_t)x.req];
      const std::span<const float> row(lg + k * (size_t)V, (size_t)V);
      SamplingParams sp = o.sampling;
      sp.seed = seeds[(size_t)x.req];
      const int32_t t = sp.temperature <= 0 ? argmax(row) : sample_token(row, sp, c.tokens.size());
      c.tokens.push_back(t);
      if (stats) ++stats->new_tokens;
      c.finished = std::find(o.stops.begin(), o.stops.end(), t) != o.stops.end();
      x.last = t;
      if (c.finished || (int)c.tokens.size() >= o.max_new) {
        x.req = -1;
        ++done;
      }
    }
    if (beat) beat();
  }
  return out;
}

}  // namespace tandem
