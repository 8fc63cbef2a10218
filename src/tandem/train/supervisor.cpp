// run_supervised: fork/exec, a heartbeat pipe, poll, waitpid.
#include "tandem/train/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <thread>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/run_lock.h"
#include "tandem/dist/launch.h"
#include "tandem/dist/rendezvous.h"
#include "tandem/train/data_parallel.h"
#include "tandem/train/events.h"
#include "tandem/train/trainer.h"

namespace tandem {
namespace {

volatile std::sig_atomic_t g_stop_requests = 0;
void on_stop(int) { g_stop_requests = g_stop_requests + 1; }

using Clock = std::chrono::steady_clock;
double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) fail("[supervisor] cannot find the tandem executable (/proc/self/exe)");
  return std::string(buf, (size_t)n);
}

double median(std::deque<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    return std::string("killed by signal ") + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "stopped";
}

}  // namespace

int run_supervised(const RunConfig& cfg, std::vector<std::string> argv, bool resume,
                   const LaunchSpec& launch) {
  const SupervisorConfig& sc = cfg.supervisor;
  const int nproc = launch.nproc;
  // One writer per run: the supervisor of rank 0 holds the lock for its whole life, across
  // restarts, and its workers inherit it. Other machines' supervisors write nothing.
  const bool writer_node = launch.node_rank == 0;
  std::optional<RunLock> lock;
  if (writer_node) lock.emplace(cfg.out_dir, "tandem train", false);
  // Node 0 serves the rendezvous for as long as the job runs (groups re-form through it).
  std::unique_ptr<RendezvousServer> rdzv;
  std::string rdzv_addr;
  if (launch.distributed()) {
    if (writer_node) {
      RendezvousOptions ro;
      ro.world = launch.world();
      ro.min_world = sc.min_ranks;
      ro.settle_s = sc.regroup_settle_s;
      ro.divisor = cfg.train.grad_accum;
      if (launch.rdzv.empty()) {
        ro.port = 0;
      } else {
        auto [h, p] = parse_host_port(launch.rdzv, "rendezvous address");
        ro.host = launch.nnodes > 1 ? "0.0.0.0" : h;
        ro.port = p;
      }
      rdzv = std::make_unique<RendezvousServer>(ro);
      rdzv_addr = launch.rdzv.empty() ? "127.0.0.1:" + std::to_string(rdzv->port()) : launch.rdzv;
    } else {
      rdzv_addr = launch.rdzv;
    }
  }
  std::string engine_host = "127.0.0.1";
  if (launch.nnodes > 1) {
    auto [h, p] = parse_host_port(rdzv_addr, "rendezvous address");
    engine_host = local_address_towards(h, p);
  }
  const std::string exe = self_exe();
  const pid_t self = ::getpid();
  // The snapshot memory lives in the supervisor, so a crashed child's last snapshot survives;
  // one per rank.
  std::vector<int> memfds;
  for (int i = 0; i < nproc; ++i) {
    int fd = ::memfd_create("tandem-snapshot", 0);
    if (fd < 0) fail(std::string("[supervisor] memfd_create: ") + std::strerror(errno));
    memfds.push_back(fd);
  }

  std::unique_ptr<EventLog> events;
  std::vector<std::pair<std::string, nlohmann::ordered_json>> early;  // before the dir exists
  // A directory the lock created holds no events until the worker is ready: a run refused for
  // its config leaves nothing behind.
  bool may_log = writer_node && !lock->created_dir();
  auto open_events = [&] {
    if (events || !may_log || !path_exists(cfg.out_dir)) return;
    events = std::make_unique<EventLog>(cfg.out_dir + "/events.jsonl");
    for (auto& [k, f] : early) events->emit(k, f);
    early.clear();
  };
  auto emit = [&](const std::string& kind, nlohmann::ordered_json f) {
    if (!writer_node) return;
    f["t"] = std::round(unix_now() * 1000.0) / 1000.0;
    f["pid"] = (int64_t)self;
    f["by"] = "supervisor";
    if (events)
      events->emit(kind, f);
    else
      early.emplace_back(kind, f);
  };
  if (resume) open_events();
  nlohmann::ordered_json start = {{"config", cfg.source}, {"resume", resume}};
  if (launch.distributed()) {
    start["ranks"] = launch.world();
    start["nnodes"] = launch.nnodes;
    start["node_rank"] = launch.node_rank;
    start["rdzv"] = rdzv_addr;
  }
  emit("run_start", start);

  g_stop_requests = 0;
  struct sigaction sa = {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  struct Worker {
    pid_t pid = -1;
    int rank = 0, hb = -1, status = 0;
    bool running = false, ready = false, progressed = false, hang = false;
    bool stopped_for_group = false;  // killed because another rank of the group failed
    Clock::time_point spawned, last_beat, last_step;
    std::deque<double> intervals;
    std::string buf;
  };
  auto with_rank = [&](nlohmann::ordered_json f, const Worker& w) {
    if (launch.distributed()) f["rank"] = w.rank;
    return f;
  };

  int restarts = 0, failures = 0;
  double backoff = sc.backoff_s;
  for (int attempt = 0;; ++attempt) {
    std::vector<std::string> args = argv;
    args[0] = exe;
    if ((resume || attempt > 0) && std::find(args.begin(), args.end(), "--resume") == args.end())
      args.push_back("--resume");
    std::vector<Worker> ws((size_t)nproc);
    for (int i = 0; i < nproc; ++i) {
      Worker& w = ws[(size_t)i];
      w.rank = launch.node_rank * nproc + i;
      int hb[2];
      if (::pipe2(hb, O_CLOEXEC) != 0)
        fail(std::string("[supervisor] pipe: ") + std::strerror(errno));
      w.spawned = w.last_beat = Clock::now();
      pid_t pid = ::fork();
      if (pid < 0) fail(std::string("[supervisor] fork: ") + std::strerror(errno));
      if (pid == 0) {
        // The child dies with the supervisor, and inherits the pipe's write end and the memfd.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != self) ::_exit(1);
        ::signal(SIGINT, SIG_DFL);
        ::signal(SIGTERM, SIG_DFL);
        int wfd = ::dup(hb[1]);  // dup() clears close-on-exec
        ::setenv("TANDEM_HEARTBEAT_FD", std::to_string(wfd).c_str(), 1);
        ::setenv("TANDEM_SNAPSHOT_FD", std::to_string(memfds[(size_t)i]).c_str(), 1);
        if (launch.distributed()) {
          RankEnv re;
          re.rank = w.rank;
          re.world = launch.world();
          re.local_rank = i;
          re.local_world = nproc;
          re.rdzv = rdzv_addr;
          re.host = engine_host;
          re.timeout_s = sc.collective_timeout_s;
          // Within the supervisor's own startup limit, so the rank's error is what is seen.
          re.join_timeout_s = 0.8 * sc.startup_timeout_s;
          export_rank_env(re);
        }
        if (lock) lock->share_with_child();
        std::vector<char*> cargs;
        for (auto& a : args) cargs.push_back(a.data());
        cargs.push_back(nullptr);
        ::execv(exe.c_str(), cargs.data());
        ::_exit(127);
      }
      ::close(hb[1]);
      w.pid = pid;
      w.hb = hb[0];
      w.running = true;
      emit("worker_start", with_rank({{"worker_pid", (int64_t)pid}, {"attempt", attempt}}, w));
    }

    bool stop_sent = false, regrouped = false;
    int failed = -1;  // the first worker that ended badly
    auto alive = [&] {
      int n = 0;
      for (auto& w : ws) n += w.running;
      return n;
    };
    while (alive() > 0) {
      std::vector<pollfd> pfds;
      for (auto& w : ws) pfds.push_back({w.running ? w.hb : -1, POLLIN, 0});
      ::poll(pfds.data(), pfds.size(), 50);
      for (size_t i = 0; i < ws.size(); ++i) {
        Worker& w = ws[i];
        if (!w.running) continue;
        if (pfds[i].revents & (POLLIN | POLLHUP)) {
          char chunk[4096];
          ssize_t n = ::read(w.hb, chunk, sizeof chunk);
          if (n > 0) w.buf.append(chunk, (size_t)n);
          size_t nl;
          while ((nl = w.buf.find('\n')) != std::string::npos) {
            std::string line = w.buf.substr(0, nl);
            w.buf.erase(0, nl + 1);
            w.last_beat = Clock::now();
            if (line.rfind("ready", 0) == 0) {
              w.ready = true;
              if (w.rank == 0) {
                may_log = true;
                open_events();
              }
            } else if (line.rfind("step", 0) == 0) {
              if (w.progressed) {
                w.intervals.push_back(secs(w.last_beat - w.last_step));
                if (w.intervals.size() > 32) w.intervals.pop_front();
              }
              w.progressed = true;
              w.last_step = w.last_beat;
            }
          }
        }
        if (::waitpid(w.pid, &w.status, WNOHANG) == w.pid) {
          w.running = false;
          ::close(w.hb);
          nlohmann::ordered_json ex = {{"worker_pid", (int64_t)w.pid},
                                       {"runtime_s", secs(Clock::now() - w.spawned)},
                                       {"hang", w.hang}};
          if (WIFEXITED(w.status)) ex["exit_code"] = WEXITSTATUS(w.status);
          if (WIFSIGNALED(w.status)) ex["signal"] = WTERMSIG(w.status);
          if (w.stopped_for_group) ex["stopped_for_group"] = true;
          open_events();
          emit("worker_exit", with_rank(ex, w));
          const bool regroup = WIFEXITED(w.status) && WEXITSTATUS(w.status) == kExitRegroup;
          regrouped = regrouped || regroup;
          const bool ok = WIFEXITED(w.status) && (WEXITSTATUS(w.status) == 0 || regroup);
          if (!ok && failed < 0) {
            failed = (int)i;
            // The group cannot go on without it: the others are stopped and all restart.
            for (auto& o : ws)
              if (o.running) {
                o.stopped_for_group = true;
                ::kill(o.pid, SIGKILL);
              }
          }
          continue;
        }
        if (g_stop_requests > 1) ::kill(w.pid, SIGKILL);
        const double timeout = !w.ready || w.intervals.empty()
                                   ? sc.startup_timeout_s
                                   : std::max(sc.hang_min_s, sc.hang_factor * median(w.intervals));
        const double quiet = secs(Clock::now() - w.last_beat);
        if (!stop_sent && !w.hang && quiet > timeout) {
          w.hang = true;
          emit("hang", with_rank({{"worker_pid", (int64_t)w.pid}, {"silent_s", quiet},
                                  {"timeout_s", timeout}}, w));
          std::fprintf(stderr, "\n[supervisor] no progress from process %d for %.1f s (timeout "
                       "%.1f s): killing it\n", (int)w.pid, quiet, timeout);
          ::kill(w.pid, SIGKILL);
        }
      }
      if (g_stop_requests > 0 && !stop_sent) {
        for (auto& w : ws)
          if (w.running) ::kill(w.pid, SIGTERM);  // each saves (rank 0) and exits 0
        stop_sent = true;
      }
    }
    const Worker& first = ws[(size_t)(failed >= 0 ? failed : 0)];
    const int status = first.status;
    const bool ready = std::all_of(ws.begin(), ws.end(), [](const Worker& w) { return w.ready; });
    const bool progressed =
        std::any_of(ws.begin(), ws.end(), [](const Worker& w) { return w.progressed; });
    const double ran = secs(Clock::now() - first.spawned);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    auto end = [&](const char* how, int rc) {
      emit("run_end", {{"status", how}, {"restarts", restarts}});
      for (int fd : memfds) ::close(fd);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      return rc;
    };
    if (failed < 0 && regrouped && g_stop_requests == 0) {
      // The group stopped at a step boundary to take in ranks that came back: start it again
      // at once; nothing failed.
      std::fprintf(stderr, "\n[supervisor] ranks are waiting to join: re-forming the group\n");
      emit("regroup_restart", {{"attempt", attempt + 1}});
      failures = 0;
      backoff = sc.backoff_s;
      continue;
    }
    if (failed < 0) return end(stop_sent ? "stopped" : "finished", 0);
    if (g_stop_requests > 0) return end("stopped", code);
    if (WIFEXITED(status) && code == kExitDiagnosis) return end("diagnosis", code);
    // A process that exits with an error before it is ready found a problem in the config or
    // the data; restarting would only repeat it.
    if (WIFEXITED(status) && !first.ready && attempt == 0) return end("failed", code);
    (void)ready;
    std::string why = first.hang ? "hung" : describe(status);
    if (progressed) {
      failures = 0;
      backoff = sc.backoff_s;
    } else if (++failures >= sc.max_failures) {
      std::fprintf(stderr, "[supervisor] giving up: %d restarts in a row made no progress\n",
                   failures);
      emit("give_up", {{"reason", "no progress"}, {"failures", failures}});
      return end("failed", 1);
    }
    if (restarts >= sc.max_restarts) {
      std::fprintf(stderr, "[supervisor] giving up: the restart budget (%d) is spent\n",
                   sc.max_restarts);
      emit("give_up", {{"reason", "restart budget"}, {"restarts", restarts}});
      return end("failed", 1);
    }
    ++restarts;
    std::fprintf(stderr, "\n[supervisor] training process %d %s after %.1f s; restart %d/%d in "
                 "%.2f s\n", (int)first.pid, why.c_str(), ran, restarts, sc.max_restarts, backoff);
    nlohmann::ordered_json rs = {{"restart", restarts}, {"reason", why}, {"backoff_s", backoff}};
    emit("restart", with_rank(rs, first));
    auto until = Clock::now() + std::chrono::duration<double>(backoff);
    while (Clock::now() < until && g_stop_requests == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (g_stop_requests > 0) return end("stopped", 0);
    if (!progressed) backoff = std::min(backoff * 2, sc.backoff_max_s);
  }
}

}  // namespace tandem
