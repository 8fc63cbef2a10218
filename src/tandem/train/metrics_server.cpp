// TrainMetricsServer (see metrics_server.h).
#include "tandem/train/metrics_server.h"

#include <httplib.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/train/status.h"

namespace tandem {
namespace {

// The newest record of a JSONL file that has `key` (a torn last line is skipped). Reads the
// file's tail only.
nlohmann::json last_with(const std::string& path, const char* key) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return nullptr;
  const std::streamoff size = in.tellg();
  for (std::streamoff tail = 1 << 16;; tail *= 4) {
    const std::streamoff from = std::max<std::streamoff>(0, size - tail);
    in.seekg(from);
    std::string text((size_t)(size - from), '\0');
    in.read(text.data(), (std::streamsize)text.size());
    std::istringstream lines(text);
    std::string line;
    nlohmann::json best;
    bool first = from > 0;  // a partial first line when the tail starts mid-file
    while (std::getline(lines, line)) {
      if (first) {
        first = false;
        continue;
      }
      try {
        nlohmann::json j = nlohmann::json::parse(line);
        if (j.is_object() && j.contains(key)) best = std::move(j);
      } catch (const std::exception&) {
      }
    }
    if (!best.is_null() || from == 0) return best;
  }
}

}  // namespace

std::string train_metrics_text(const std::string& run_dir) {
  const RunStatus st = read_run_status(run_dir);
  std::ostringstream o;
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
      << name << " " << v << "\n";
  };
  metric("tandem_train_step", "gauge", "Steps committed.", (double)st.steps_done);
  metric("tandem_train_max_steps", "gauge", "Steps the run is configured for.",
         (double)st.max_steps);
  const nlohmann::json m = last_with(run_dir + "/metrics.jsonl", "loss");
  if (m.is_object()) {
    metric("tandem_train_loss", "gauge", "Loss of the newest committed step.", m.value("loss", 0.0));
    metric("tandem_train_learning_rate", "gauge", "Learning rate of the newest step.",
           m.value("lr", 0.0));
    metric("tandem_train_grad_norm", "gauge", "Gradient norm of the newest step.",
           m.value("grad_norm", 0.0));
  }
  const nlohmann::json v = last_with(run_dir + "/metrics.jsonl", "val_loss");
  if (v.is_object())
    metric("tandem_train_val_loss", "gauge", "The newest validation loss.", v.value("val_loss", 0.0));
  const nlohmann::json r = last_with(run_dir + "/metrics.jsonl", "reward_mean");
  if (r.is_object()) {
    metric("tandem_train_reward_mean", "gauge", "RL: mean reward of the newest rollouts.",
           r.value("reward_mean", 0.0));
    metric("tandem_train_kl", "gauge", "RL: mean KL to the reference per token.",
           r.value("kl", 0.0));
  }
  const nlohmann::json t = last_with(run_dir + "/timing.jsonl", "tokens_per_s");
  if (t.is_object())
    metric("tandem_train_tokens_per_second", "gauge", "Training tokens per second, newest step.",
           t.value("tokens_per_s", 0.0));
  metric("tandem_train_restarts_total", "counter", "Restarts of the training process.",
         (double)st.restarts);
  metric("tandem_train_crashes_total", "counter", "Crashes of the training process.",
         (double)st.crashes);
  metric("tandem_train_hangs_total", "counter", "Hangs detected by the supervisor.",
         (double)st.hangs);
  metric("tandem_train_rollbacks_total", "counter", "Steps rolled back by the guard.",
         (double)st.rollbacks);
  metric("tandem_train_skipped_batches_total", "counter", "Batches skipped as bad data.",
         (double)st.skipped_batches);
  metric("tandem_train_checkpoints_total", "counter", "Checkpoints written.",
         (double)st.checkpoints_saved);
  metric("tandem_train_last_checkpoint_step", "gauge", "Step of the newest checkpoint that verifies.",
         (double)st.last_checkpoint_step);
  metric("tandem_train_goodput", "gauge",
         "Share of wall time spent on steps that were kept (the rest: restarts, replays).",
         st.goodput());
  metric("tandem_train_wall_seconds", "counter", "Wall time of the run so far.", st.wall_s);
  o << "# HELP tandem_train_state The run's state (1 for the current one).\n"
       "# TYPE tandem_train_state gauge\ntandem_train_state{state=\"" << st.state << "\"} 1\n";
  return o.str();
}

struct TrainMetricsServer::Impl {
  httplib::Server svr;
  std::thread thread;
  int port = 0;
};

TrainMetricsServer::TrainMetricsServer(const std::string& run_dir, const std::string& host,
                                       int port)
    : impl_(std::make_unique<Impl>()) {
  impl_->svr.Get("/metrics", [run_dir](const httplib::Request&, httplib::Response& res) {
    try {
      res.set_content(train_metrics_text(run_dir), "text/plain; version=0.0.4");
    } catch (const std::exception& e) {  // the run directory is not (yet) a run
      res.status = 503;
      res.set_content(std::string("[metrics] ") + e.what() + "\n", "text/plain");
    }
  });
  impl_->port = port == 0 ? impl_->svr.bind_to_any_port(host) : (impl_->svr.bind_to_port(host, port) ? port : -1);
  if (impl_->port <= 0)
    fail("[metrics] cannot listen on " + host + ":" + std::to_string(port));
  impl_->thread = std::thread([this] { impl_->svr.listen_after_bind(); });
}

TrainMetricsServer::~TrainMetricsServer() {
  impl_->svr.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int TrainMetricsServer::port() const { return impl_->port; }

}  // namespace tandem
