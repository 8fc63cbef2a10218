// The trainer's Prometheus endpoint (opt-in: `tandem train --metrics-port P`): GET /metrics
// answers in the text exposition format, in the style of `tandem serve`'s /metrics, with the
// run's step, loss, validation loss, learning rate, gradient norm, tokens/s, restarts,
// rollbacks, skipped batches, checkpoints and goodput (and for RL runs the mean reward and
// KL). Each scrape reads the run directory (as `tandem status` does), so the numbers hold
// across crashes and restarts of the training process; the process that owns the run (the
// supervisor, or the trainer without one) serves it.
#pragma once

#include <memory>
#include <string>

namespace tandem {

class TrainMetricsServer {
 public:
  // Binds host:port (port 0: any free one) and serves on a thread until destroyed. Throws
  // "[metrics] ..." when the address cannot be bound.
  TrainMetricsServer(const std::string& run_dir, const std::string& host, int port);
  ~TrainMetricsServer();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The exposition text for a run directory (also for tests).
std::string train_metrics_text(const std::string& run_dir);

}  // namespace tandem
