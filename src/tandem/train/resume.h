// Where a run starts: the newest state that verifies, in memory (the supervisor's snapshot,
// which outlives a crashed process), on disk (the newest checkpoint), or on another rank of
// the group; else from the seed.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "tandem/ckpt/config.h"

namespace tandem {

class AdamW;
class EventLog;
class FaultPlan;
class Llama;
class RankGroup;
class SnapshotStore;
struct RunState;

struct StartInputs {
  const RunConfig& cfg;
  bool resume;                              // --resume: continue from saved state
  const std::optional<std::string>& latest;  // the newest checkpoint that verifies
  int64_t disk_step;                         // its step (-1: none)
  const std::string& tokenizer_sha256;
  const std::string& tokenizer_path;
  // The state besides tensors as JSON text (for sharing it with other ranks).
  std::function<std::string()> meta;
  // A fresh start loads these weights instead of drawing them from the seed (sft.init).
  std::string init_dir;
};

struct StartPoint {
  std::string from;            // "", "memory", "rank" or the checkpoint's directory
  bool from_snapshot = false;  // the in-memory snapshot already holds this state
};

StartPoint restore_start_state(const StartInputs& in, SnapshotStore& snap, Llama& model,
                               AdamW& opt, RunState& state, EventLog& events, FaultPlan& faults,
                               const RankGroup& group);

// The checkpoint `init` names (a step directory, or a run directory's newest), checked against
// the config's architecture and the tokenizer: Error "[sft] sft.init ..." (after `key`) naming
// what differs.
std::string resolve_init(const RunConfig& cfg, const std::string& init, const std::string& key,
                         const std::string& tokenizer_sha256, const std::string& tokenizer_path);
// The fine-tuning run's starting weights: sft.init or grpo.init.
std::string resolve_sft_init(const RunConfig& cfg, const std::string& tokenizer_sha256,
                             const std::string& tokenizer_path);

// A checkpoint continues only the run that wrote it: the model must be the same, and so must
// the seed (it fixes the data order). Batch-shape changes are allowed but end bit-exactness.
void check_resumable(const RunConfig& ck, const RunConfig& now, const std::string& dir);

}  // namespace tandem
