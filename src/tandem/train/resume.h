// Where a run starts: the newest state that verifies, in memory (the supervisor's snapshot,
// which outlives a crashed process), on disk (the newest checkpoint), or on another rank of
// the group; else from the seed.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "tandem/train/config.h"

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
};

struct StartPoint {
  std::string from;            // "", "memory", "rank" or the checkpoint's directory
  bool from_snapshot = false;  // the in-memory snapshot already holds this state
};

StartPoint restore_start_state(const StartInputs& in, SnapshotStore& snap, Llama& model,
                               AdamW& opt, RunState& state, EventLog& events, FaultPlan& faults,
                               const RankGroup& group);

// A checkpoint continues only the run that wrote it: the model must be the same, and so must
// the seed (it fixes the data order). Batch-shape changes are allowed but end bit-exactness.
void check_resumable(const RunConfig& ck, const RunConfig& now, const std::string& dir);

}  // namespace tandem
