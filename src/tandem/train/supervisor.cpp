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
#include <thread>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/run_lock.h"
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

int run_supervised(const RunConfig& cfg, std::vector<std::string> argv, bool resume) {
  const SupervisorConfig& sc = cfg.supervisor;
  // One writer per run: the supervisor holds the lock for its whole life, across restarts,
  // and every worker inherits it.
  RunLock lock(cfg.out_dir, "tandem train", false);
  const std::string exe = self_exe();
  const pid_t self = ::getpid();
  // The snapshot memory lives in the supervisor, so a crashed child's last snapshot survives.
  int memfd = ::memfd_create("tandem-snapshot", 0);
  if (memfd < 0) fail(std::string("[supervisor] memfd_create: ") + std::strerror(errno));

  std::unique_ptr<EventLog> events;
  std::vector<std::pair<std::string, nlohmann::ordered_json>> early;  // before the dir exists
  // A directory the lock created holds no events until the worker is ready: a run refused for
  // its config leaves nothing behind.
  bool may_log = !lock.created_dir();
  auto open_events = [&] {
    if (events || !may_log || !path_exists(cfg.out_dir)) return;
    events = std::make_unique<EventLog>(cfg.out_dir + "/events.jsonl");
    for (auto& [k, f] : early) events->emit(k, f);
    early.clear();
  };
  auto emit = [&](const std::string& kind, nlohmann::ordered_json f) {
    f["t"] = std::round(unix_now() * 1000.0) / 1000.0;
    f["pid"] = (int64_t)self;
    f["by"] = "supervisor";
    if (events)
      events->emit(kind, f);
    else
      early.emplace_back(kind, f);
  };
  if (resume) open_events();
  emit("run_start", {{"config", cfg.source}, {"resume", resume}});

  g_stop_requests = 0;
  struct sigaction sa = {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  int restarts = 0, failures = 0;
  double backoff = sc.backoff_s;
  for (int attempt = 0;; ++attempt) {
    int hb[2];
    if (::pipe2(hb, O_CLOEXEC) != 0)
      fail(std::string("[supervisor] pipe: ") + std::strerror(errno));
    std::vector<std::string> args = argv;
    args[0] = exe;
    if ((resume || attempt > 0) && std::find(args.begin(), args.end(), "--resume") == args.end())
      args.push_back("--resume");
    const auto t_spawn = Clock::now();
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
      ::setenv("TANDEM_SNAPSHOT_FD", std::to_string(memfd).c_str(), 1);
      lock.share_with_child();
      std::vector<char*> cargs;
      for (auto& a : args) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      ::execv(exe.c_str(), cargs.data());
      ::_exit(127);
    }
    ::close(hb[1]);
    emit("worker_start", {{"worker_pid", (int64_t)pid}, {"attempt", attempt}});

    bool ready = false, progressed = false, hang = false, stop_sent = false;
    auto last_beat = Clock::now(), last_step = Clock::time_point{};
    std::deque<double> intervals;
    std::string buf;
    int status = 0;
    for (;;) {
      pollfd p = {hb[0], POLLIN, 0};
      int pr = ::poll(&p, 1, 50);
      if (pr > 0 && (p.revents & (POLLIN | POLLHUP))) {
        char chunk[4096];
        ssize_t n = ::read(hb[0], chunk, sizeof chunk);
        if (n > 0) buf.append(chunk, (size_t)n);
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
          std::string line = buf.substr(0, nl);
          buf.erase(0, nl + 1);
          last_beat = Clock::now();
          if (line.rfind("ready", 0) == 0) {
            ready = true;
            may_log = true;
            open_events();
          } else if (line.rfind("step", 0) == 0) {
            if (progressed) {
              intervals.push_back(secs(last_beat - last_step));
              if (intervals.size() > 32) intervals.pop_front();
            }
            progressed = true;
            last_step = last_beat;
          }
        }
      }
      pid_t w = ::waitpid(pid, &status, WNOHANG);
      if (w == pid) break;
      if (g_stop_requests > 0 && !stop_sent) {
        ::kill(pid, SIGTERM);  // the child saves a checkpoint and exits 0
        stop_sent = true;
      }
      if (g_stop_requests > 1) ::kill(pid, SIGKILL);
      const double timeout = !ready || intervals.empty()
                                 ? sc.startup_timeout_s
                                 : std::max(sc.hang_min_s, sc.hang_factor * median(intervals));
      const double quiet = secs(Clock::now() - last_beat);
      if (!stop_sent && !hang && quiet > timeout) {
        hang = true;
        emit("hang", {{"worker_pid", (int64_t)pid}, {"silent_s", quiet}, {"timeout_s", timeout}});
        std::fprintf(stderr, "\n[supervisor] no progress from process %d for %.1f s (timeout "
                     "%.1f s): killing it\n", (int)pid, quiet, timeout);
        ::kill(pid, SIGKILL);
      }
    }
    ::close(hb[0]);
    const double ran = secs(Clock::now() - t_spawn);
    nlohmann::ordered_json ex = {{"worker_pid", (int64_t)pid}, {"runtime_s", ran}, {"hang", hang}};
    if (WIFEXITED(status)) ex["exit_code"] = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) ex["signal"] = WTERMSIG(status);
    open_events();
    emit("worker_exit", ex);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    auto end = [&](const char* how, int rc) {
      emit("run_end", {{"status", how}, {"restarts", restarts}});
      ::close(memfd);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      return rc;
    };
    if (WIFEXITED(status) && code == 0) return end(stop_sent ? "stopped" : "finished", 0);
    if (g_stop_requests > 0) return end("stopped", code);
    if (WIFEXITED(status) && code == kExitDiagnosis) return end("diagnosis", code);
    // A process that exits with an error before it is ready found a problem in the config or
    // the data; restarting would only repeat it.
    if (WIFEXITED(status) && !ready && attempt == 0) return end("failed", code);
    std::string why = hang ? "hung" : describe(status);
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
                 "%.2f s\n", (int)pid, why.c_str(), ran, restarts, sc.max_restarts, backoff);
    emit("restart", {{"restart", restarts}, {"reason", why}, {"backoff_s", backoff}});
    auto until = Clock::now() + std::chrono::duration<double>(backoff);
    while (Clock::now() < until && g_stop_requests == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (g_stop_requests > 0) return end("stopped", 0);
    if (!progressed) backoff = std::min(backoff * 2, sc.backoff_max_s);
  }
}

}  // namespace tandem
