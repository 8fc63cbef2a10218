// The run's metrics log: one JSON object per line (train steps and evaluations). On resume the
// records past the checkpoint's step are dropped, so the log reads as one uninterrupted run.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace tandem {

class MetricsLog {
 public:
  MetricsLog(const std::string& path, int64_t resume_step);
  ~MetricsLog();
  void step(int64_t step, double loss, float lr, double grad_norm, double tokens_per_s,
            double elapsed_s, bool skipped);
  void eval(int64_t step, double val_loss);

 private:
  void write(const std::string& line);
  FILE* f_ = nullptr;
};

}  // namespace tandem
