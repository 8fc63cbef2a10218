// The run's logs of committed steps. metrics.jsonl holds only what the computation determines
// (loss, lr, gradient norm, validation loss), so a run that crashed and resumed has a byte-
// identical metrics.jsonl to one that never failed. timing.jsonl holds the wall-clock side
// (step time, tokens/s) and is append-only: a step redone after a crash appears twice there.
#pragma once

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace tandem {

class MetricsLog {
 public:
  // Opens path, keeping only records with step <= resume_step (drops a torn last line). An
  // empty path discards (the data-parallel ranks other than the writer).
  MetricsLog(const std::string& path, int64_t resume_step);
  ~MetricsLog();
  // `extra`: more fields of the step (an object, or null).
  void step(int64_t step, double loss, float lr, double grad_norm,
            const nlohmann::json& extra = nullptr);
  // Any other record of a step (an object of fields).
  void record(int64_t step, const nlohmann::json& fields);
  // accuracy < 0: not measured (not written)
  void eval(int64_t step, double val_loss, double val_token_accuracy = -1);
  void truncate(int64_t step);  // drop records past `step` (after a rollback)

 private:
  void write(const std::string& line);
  std::string path_;
  FILE* f_ = nullptr;
};

class TimingLog {
 public:
  explicit TimingLog(const std::string& path);
  ~TimingLog();
  void step(int64_t step, double step_s, double tokens_per_s,
            const nlohmann::json& extra = nullptr);

 private:
  FILE* f_ = nullptr;
};

}  // namespace tandem
