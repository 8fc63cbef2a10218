// `tandem dashboard RUN_DIR...`: a web page that follows runs live. The server hands out the
// page (built into the binary: it works offline) and, per run, what its files say: status (as
// `tandem status` reads it), and the new lines of metrics.jsonl, timing.jsonl and
// events.jsonl since the byte offsets the page already has. The page polls about once a second.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tandem {

struct DashboardOptions {
  std::vector<std::string> runs;  // run directories
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port
  std::string api_key;  // non-empty: /api/* needs "Authorization: Bearer KEY"
};

class DashboardServer {
 public:
  explicit DashboardServer(const DashboardOptions& o);  // binds; throws "[dashboard] ..."
  ~DashboardServer();
  int port() const;
  void run();   // serves until stop()
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The JSON the page reads (also for tests): the runs and their status, and a run's new
// records since byte offsets {"metrics", "timing", "events"}; a file that shrank since (a
// rollback rewrote it) starts again from 0 with "reset": true.
nlohmann::json dashboard_runs(const std::vector<std::string>& runs);
nlohmann::json dashboard_data(const std::string& run_dir, const nlohmann::json& offsets);

}  // namespace tandem
