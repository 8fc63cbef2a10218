// Parity between two inference models of the same checkpoint (a reference backend and a
// candidate backend/quantization): per-position KL divergence and top-token agreement on a
// prompt set and on the validation shard, greedy agreement over generated continuations, and
// the perplexity ratio. `tandem verify` prints this and judges it against thresholds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/data/shard.h"
#include "tandem/data/tokenizer.h"
#include "tandem/infer/engine.h"

namespace tandem {

struct ParityOptions {
  std::vector<std::string> prompts;  // empty: default_parity_prompts()
  int greedy_tokens = 128;           // continuation length compared per prompt
  int64_t val_tokens = 16384;        // validation tokens scored (0 = skip)
};

struct ParityReport {
  int64_t positions = 0;       // positions compared (prompt set and validation)
  double mean_kld = 0, max_kld = 0;
  double top1_agreement = 0;   // fraction of positions with the same most likely token
  int prompts = 0;
  double greedy_agreement = 0;  // mean fraction of each continuation generated identically
  int greedy_identical = 0;     // prompts whose whole continuation matched
  int64_t val_positions = 0;
  double ppl_reference = 0, ppl_candidate = 0, ppl_ratio = 0;
};

std::vector<std::string> default_parity_prompts();

ParityReport run_parity(InferModel& reference, InferModel& candidate, const Tokenizer& tok,
                        const ShardReader* val, const ParityOptions& opt);

}  // namespace tandem
