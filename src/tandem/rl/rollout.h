// Batched generation for rollouts and evaluation: completions of many prompts on the inference
// engine (KV cache, continuous batching: a sequence that ends frees its slot for the next one
// at the next engine step). Each request's tokens depend only on its prompt, its seed and the
// weights (draws are counter-based on (seed, position) and the engine's rows do not depend on
// the batch), so a replayed step samples the same completions.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "tandem/infer/sampler.h"

namespace tandem {

class InferModel;

struct GenerateOptions {
  int max_new = 16;       // tokens per completion
  int slots = 16;         // sequences decoded together
  SamplingParams sampling;  // temperature 0: greedy; the seed is each request's own
  std::vector<int32_t> stops;  // tokens that end a completion (kept as its last token)
};

struct Completion {
  std::vector<int32_t> tokens;  // with the stop token when finished
  bool finished = false;        // ended by a stop token, not by max_new
};

struct GenerateStats {
  int64_t new_tokens = 0, prompt_tokens = 0, engine_steps = 0;
};

// One completion per prompt; request k samples with seeds[k]. Throws "[engine] ..." when a
// prompt and max_new exceed the model context.
std::vector<Completion> generate(InferModel& model, const std::vector<const std::vector<int32_t>*>& prompts,
                                 const std::vector<uint64_t>& seeds, const GenerateOptions& o,
                                 const std::function<void()>& beat, GenerateStats* stats = nullptr);

}  // namespace tandem
