// read_run_status: counts events, replays the session boundaries for wall time, and takes the
// newest timing record of every step that the metrics log still holds as kept step time.
#include "tandem/train/status.h"

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <vector>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/ckpt/checkpoint.h"
#include "tandem/ckpt/config.h"
#include "tandem/train/events.h"

namespace tandem {

namespace {
std::vector<nlohmann::json> read_jsonl(const std::string& path) { return read_events(path); }
}  // namespace

RunStatus read_run_status(const std::string& dir) {
  if (!path_exists(dir)) fail("[status] run directory '" + dir + "' does not exist");
  if (!path_exists(dir + "/events.jsonl") && !path_exists(dir + "/metrics.jsonl"))
    fail("[status] '" + dir + "' is not a run directory (no events.jsonl or metrics.jsonl)");
  RunStatus s;
  s.run_dir = dir;
  if (path_exists(dir + "/config.toml")) {
    try {
      s.max_steps = parse_run_config(read_file(dir + "/config.toml"), dir + "/config.toml")
                        .train.max_steps;
    } catch (const Error&) {
    }
  }
  for (const auto& m : read_jsonl(dir + "/metrics.jsonl"))
    if (m.contains("loss") && m.contains("step")) s.steps_done = m["step"].get<int64_t>();

  // Wall time: each session (a supervisor, or an unsupervised process) runs from its start
  // event to the last record stamped before the next session starts.
  const auto events = read_jsonl(dir + "/events.jsonl");
  const auto timing = read_jsonl(dir + "/timing.jsonl");
  std::vector<std::pair<double, bool>> stamps;  // (t, starts a session)
  std::vector<std::pair<double, std::string>> failures;  // restarts: (t, reason)
  std::string last_status;
  int64_t last_session_pid = -1;
  bool session_ended = false;
  for (const auto& e : events) {
    const std::string k = e.value("event", "");
    const double t = e.value("t", 0.0);
    const bool start = k == "run_start" || (k == "train_start" && !e.value("supervised", false));
    stamps.emplace_back(t, start);
    if (start) {
      last_session_pid = e.value("pid", (int64_t)-1);
      session_ended = false;
    }
    if (k == "run_end" || (k == "train_end" && !e.value("supervised", true))) session_ended = true;
    if (k == "run_end") last_status = e.value("status", "");
    if (k == "restart") ++s.restarts;
    if (k == "hang") ++s.hangs;
    if (k == "worker_exit" && !e.value("stopped_for_group", false) &&
        (e.contains("signal") || e.value("exit_code", 0) != 0))
      ++s.crashes;
    if (k == "train_start") {
      const int ranks = e.value("ranks", 1);
      if (s.world_sizes.empty() || s.world_sizes.back().second != ranks)
        s.world_sizes.emplace_back(t, ranks);
    }
    if (k == "restart") failures.emplace_back(t, e.value("reason", std::string("?")));
    if (k == "regroup_restart") {
      ++s.regroups;
      failures.emplace_back(t, "regroup (ranks joined)");
    }
    if (k == "straggler")
      s.stragglers.push_back({e.value("straggler_rank", -1), e.value("step", (int64_t)0),
                              e.value("ratio", 0.0), false});
    if (k == "straggler_recovered")
      for (auto& x : s.stragglers)
        if (x.rank == e.value("straggler_rank", -1)) x.recovered = true;
    if (k == "rank_diverged") s.diagnosis = e.value("message", "");
    if (k == "rollback") ++s.rollbacks;
    if (k == "transient_fault") ++s.transient_faults;
    if (k == "batch_skipped") ++s.skipped_batches;
    if (k == "anomaly") ++s.anomalies;
    if (k == "checkpoint_saved") ++s.checkpoints_saved;
    if (k == "checkpoint_failed") ++s.checkpoint_failures;
    if (k == "checkpoint_rejected") ++s.checkpoints_rejected;
    if (k == "fault_injected") ++s.faults_injected;
    if (k == "fingerprint") s.last_fingerprint = e.value("params", "");
    if (k == "diagnosis") s.diagnosis = e.value("message", "");
  }
  // A step is kept if the metrics log still holds it: its newest timing record counts.
  std::map<int64_t, double> step_time;
  for (const auto& r : timing) {
    const double t = r.value("t", 0.0);
    stamps.emplace_back(t, false);
    const int64_t st = r.value("step", (int64_t)-1);
    if (st >= 1 && st <= s.steps_done) step_time[st] = r.value("step_s", 0.0);
  }
  for (const auto& [st, v] : step_time) s.kept_step_s += v;
  // Downtime of each restart: from its event to the next step any process committed.
  for (const auto& [t, why] : failures) {
    double next = -1;
    for (const auto& r : timing)
      if (r.value("t", 0.0) > t) {
        next = r.value("t", 0.0);
        break;
      }
    if (next > 0) s.downtime.emplace_back(why, next - t);
  }
  std::stable_sort(stamps.begin(), stamps.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  double start = -1, last = -1;
  for (const auto& [t, starts] : stamps) {
    if (starts) {
      if (start >= 0) s.wall_s += last - start;
      start = t;
    }
    if (start < 0) start = t;
    last = t;
  }
  const bool alive = !session_ended && last_session_pid > 0 && ::kill((pid_t)last_session_pid, 0) == 0;
  if (alive) last = std::max(last, unix_now());
  if (start >= 0) s.wall_s += last - start;

  if (alive)
    s.state = "running";
  else if (!s.diagnosis.empty() && last_status != "finished")
    s.state = "diagnosis";
  else if (!last_status.empty())
    s.state = session_ended ? last_status : "interrupted";
  else if (session_ended)
    s.state = s.max_steps > 0 && s.steps_done >= s.max_steps ? "finished" : "stopped";
  else
    s.state = events.empty() ? "new" : "interrupted";

  std::vector<std::string> rejected;
  if (auto latest = latest_checkpoint(dir, &rejected)) {
    s.last_checkpoint = *latest;
    s.last_checkpoint_step = read_manifest(*latest)["step"].get<int64_t>();
  }
  return s;
}

nlohmann::ordered_json RunStatus::ws_json() const {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const auto& [t, n] : world_sizes) a.push_back({{"t", t}, {"ranks", n}});
  return a;
}

nlohmann::ordered_json RunStatus::dt_json() const {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const auto& [why, sec] : downtime) a.push_back({{"reason", why}, {"seconds", sec}});
  return a;
}

nlohmann::ordered_json RunStatus::stragglers_json() const {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const auto& x : stragglers)
    a.push_back({{"rank", x.rank}, {"step", x.step}, {"ratio", x.ratio}, {"recovered", x.recovered}});
  return a;
}

nlohmann::ordered_json RunStatus::to_json() const {
  return {{"run_dir", run_dir},
          {"state", state},
          {"steps_done", steps_done},
          {"max_steps", max_steps},
          {"restarts", restarts},
          {"crashes", crashes},
          {"hangs", hangs},
          {"rollbacks", rollbacks},
          {"transient_faults", transient_faults},
          {"skipped_batches", skipped_batches},
          {"anomalies", anomalies},
          {"checkpoints_saved", checkpoints_saved},
          {"checkpoint_failures", checkpoint_failures},
          {"checkpoints_rejected", checkpoints_rejected},
          {"faults_injected", faults_injected},
          {"last_checkpoint", last_checkpoint},
          {"last_checkpoint_step", last_checkpoint_step},
          {"kept_step_s", kept_step_s},
          {"wall_s", wall_s},
          {"goodput", goodput()},
          {"last_fingerprint", last_fingerprint},
          {"world_sizes", ws_json()},
          {"downtime", dt_json()},
          {"regroups", regroups},
          {"stragglers", stragglers_json()},
          {"diagnosis", diagnosis}};
}

std::string RunStatus::to_text() const {
  std::ostringstream o;
  char buf[160];
  o << "run          " << run_dir << "\n";
  o << "state        " << state << "\n";
  o << "steps        " << steps_done;
  if (max_steps > 0) o << " / " << max_steps;
  o << "\n";
  o << "restarts     " << restarts << " (" << crashes << " crashed or killed, " << hangs
    << " hung)\n";
  o << "rollbacks    " << rollbacks << " (" << transient_faults << " transient faults, "
    << anomalies << " anomalies)\n";
  o << "skipped      " << skipped_batches << " batches\n";
  o << "checkpoints  " << checkpoints_saved << " saved, " << checkpoint_failures << " failed, "
    << checkpoints_rejected << " rejected\n";
  o << "last good    "
    << (last_checkpoint.empty() ? "none" : last_checkpoint + " (step " +
                                               std::to_string(last_checkpoint_step) + ")")
    << "\n";
  std::snprintf(buf, sizeof buf, "goodput      %.1f%% (%.1f s of kept steps / %.1f s wall)\n",
                100 * goodput(), kept_step_s, wall_s);
  o << buf;
  if (faults_injected) o << "injected     " << faults_injected << " faults\n";
  if (!world_sizes.empty() && (world_sizes.size() > 1 || world_sizes[0].second > 1)) {
    o << "ranks       ";
    for (const auto& [t, n] : world_sizes) o << " " << n;
    o << " (each session that changed it)\n";
  }
  if (!downtime.empty()) {
    double total = 0;
    for (const auto& d : downtime) total += d.second;
    std::snprintf(buf, sizeof buf, "downtime     %.1f s over %zu restarts (failure to next step)\n",
                  total, downtime.size());
    o << buf;
  }
  if (regroups) o << "regroups     " << regroups << " (ranks that came back joined)\n";
  for (const auto& x : stragglers) {
    std::snprintf(buf, sizeof buf, "straggler    rank %d from step %lld, %.1fx the others%s\n",
                  x.rank, (long long)x.step, x.ratio, x.recovered ? " (recovered)" : "");
    o << buf;
  }
  if (!diagnosis.empty()) o << "diagnosis    " << diagnosis << "\n";
  return o.str();
}

}  // namespace tandem
