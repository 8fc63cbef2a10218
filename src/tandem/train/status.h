// `tandem status RUN_DIR`: what happened to a run, read from its directory alone (events.jsonl,
// metrics.jsonl, timing.jsonl, config.toml and the checkpoints).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace tandem {

struct RunStatus {
  std::string run_dir;
  std::string state;  // finished, running, stopped, failed, diagnosis, interrupted, new
  int64_t steps_done = 0, max_steps = 0;
  int restarts = 0, hangs = 0, crashes = 0;
  int rollbacks = 0, transient_faults = 0, skipped_batches = 0, anomalies = 0;
  int checkpoints_saved = 0, checkpoint_failures = 0, checkpoints_rejected = 0;
  int faults_injected = 0;
  std::string last_checkpoint;  // newest that verifies ("" if none)
  int64_t last_checkpoint_step = -1;
  double kept_step_s = 0, wall_s = 0;  // goodput = kept_step_s / wall_s
  double goodput() const { return wall_s > 0 ? kept_step_s / wall_s : 0; }
  std::string last_fingerprint;  // params hash of the newest fingerprint event
  std::string diagnosis;
  // Data parallel: the number of ranks of each session that changed it, and for each
  // restart the seconds from the failure to the next committed step.
  std::vector<std::pair<double, int>> world_sizes;  // (unix time, ranks)
  std::vector<std::pair<std::string, double>> downtime;  // (reason, seconds)
  struct Straggler {
    int rank;
    int64_t step;     // when it was reported
    double ratio;     // its compute time per step over the others' median
    bool recovered;   // a later report says it caught up
  };
  std::vector<Straggler> stragglers;
  int regroups = 0;  // planned re-forms to take in ranks that came back
  nlohmann::ordered_json to_json() const;
  nlohmann::ordered_json ws_json() const;
  nlohmann::ordered_json dt_json() const;
  nlohmann::ordered_json stragglers_json() const;
  std::string to_text() const;
};

RunStatus read_run_status(const std::string& run_dir);  // throws Error if it is not a run

}  // namespace tandem
