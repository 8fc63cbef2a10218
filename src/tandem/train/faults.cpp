// FaultPlan: parsing, fire-once bookkeeping and the crash timer.
#include "tandem/train/faults.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "tandem/backend/backend.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/train/events.h"

namespace tandem {
namespace {

const std::map<std::string, FaultKind>& kinds() {
  static const std::map<std::string, FaultKind> k = {
      {"crash", FaultKind::kCrash},
      {"hang", FaultKind::kHang},
      {"nan_grad", FaultKind::kNanGrad},
      {"inf_grad", FaultKind::kInfGrad},
      {"bitflip_param", FaultKind::kBitflipParam},
      {"bitflip_grad", FaultKind::kBitflipGrad},
      {"bitflip_act", FaultKind::kBitflipAct},
      {"spike", FaultKind::kSpike},
      {"bad_batch", FaultKind::kBadBatch},
      {"ckpt_crash", FaultKind::kCkptCrash},
      {"ckpt_corrupt", FaultKind::kCkptCorrupt},
      {"ckpt_truncate", FaultKind::kCkptTruncate},
      {"enospc", FaultKind::kEnospc},
      {"erofs", FaultKind::kErofs},
      {"slow_replay", FaultKind::kSlowReplay},
      {"slow_comm", FaultKind::kSlowComm},
      {"slow_rank", FaultKind::kSlowRank},
      {"bitflip_bucket", FaultKind::kBitflipBucket},
      {"pause", FaultKind::kPause},
  };
  return k;
}

bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 15 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
  out = std::stoll(s);
  return true;
}

bool parse_seconds(const std::string& s, double& out) {
  if (s.size() < 2 || s.back() != 's') return false;
  char* end = nullptr;
  std::string num = s.substr(0, s.size() - 1);
  out = std::strtod(num.c_str(), &end);
  return end && *end == '\0' && out > 0 && out < 1e7;
}

bool is_bitflip(FaultKind k) {
  return k == FaultKind::kBitflipParam || k == FaultKind::kBitflipGrad ||
         k == FaultKind::kBitflipAct || k == FaultKind::kBitflipBucket;
}

}  // namespace

FaultPlan FaultPlan::parse(const std::string& spec) {
  FaultPlan plan;
  std::stringstream ss(spec);
  for (std::string item; std::getline(ss, item, ',');) {
    item.erase(std::remove_if(item.begin(), item.end(), ::isspace), item.end());
    if (item.empty()) continue;
    auto bad = [&](const std::string& why) {
      fail("[faults] '" + item + "': " + why + " (see docs/resilience.md)");
    };
    int rank = -1;
    std::string body = item;
    if (item.rfind("rank", 0) == 0) {
      const size_t colon = item.find(':');
      int64_t r = -1;
      if (colon == std::string::npos || !parse_int(item.substr(4, colon - 4), r))
        bad("expected rankR:KIND@WHEN");
      rank = (int)r;
      body = item.substr(colon + 1);
    }
    const size_t at = body.find('@');
    if (at == std::string::npos) bad("expected KIND@WHEN");
    const std::string name = body.substr(0, at);
    std::string when = body.substr(at + 1);
    auto it = kinds().find(name);
    if (it == kinds().end()) bad("unknown fault kind '" + name + "'");
    Fault f;
    f.spec = item;
    f.kind = it->second;
    f.rank = rank;
    if (is_bitflip(f.kind)) {
      const size_t colon = when.find(':');
      // A bucket holds 64-bit integers: by default a high bit, a corruption the guard sees.
      const int top = f.kind == FaultKind::kBitflipBucket ? 63 : 31;
      if (f.kind == FaultKind::kBitflipBucket) f.bit = 61;
      if (colon != std::string::npos) {
        int64_t b = -1;
        if (!parse_int(when.substr(colon + 1), b) || b > top)
          bad("the bit must be 0.." + std::to_string(top));
        f.bit = (int)b;
        when = when.substr(0, colon);
      }
    }
    if (f.kind == FaultKind::kSlowRank) {
      char* end = nullptr;
      const std::string num = when.size() > 1 && when.back() == 'x' ? when.substr(0, when.size() - 1) : "";
      f.factor = num.empty() ? 0 : std::strtod(num.c_str(), &end);
      if (num.empty() || !end || *end || !(f.factor >= 1 && f.factor <= 1000))
        bad("expected slow_rank@FACTORx with a factor in 1..1000, e.g. slow_rank@3x");
      f.every = true;
    } else if (f.kind == FaultKind::kSlowComm) {
      if (!parse_seconds(when, f.seconds)) bad("expected slow_comm@SECONDSs");
      f.every = true;
    } else if (f.kind == FaultKind::kSlowReplay) {
      if (!parse_seconds(when, f.seconds)) bad("expected slow_replay@SECONDSs");
      f.every = true;  // acts on every replay, in every process
    } else if (f.kind == FaultKind::kCrash && when == "resume") {
      f.kind = FaultKind::kCrashResume;
    } else if (f.kind == FaultKind::kCrash && when.rfind("every:", 0) == 0) {
      f.every = true;
      if (!parse_seconds(when.substr(6), f.seconds)) bad("expected every:SECONDSs");
    } else if (f.kind == FaultKind::kCrash && when.rfind("random:", 0) == 0) {
      f.random = true;
      if (!parse_seconds(when.substr(7), f.seconds)) bad("expected random:SECONDSs");
    } else if (f.kind == FaultKind::kCrash && parse_seconds(when, f.seconds)) {
      // crash after f.seconds
    } else if (!parse_int(when, f.step) || f.step < 1) {
      bad("expected a step number >= 1");
    }
    plan.faults_.push_back(f);
  }
  return plan;
}

void FaultPlan::set_rank(int rank) {
  std::vector<Fault> kept;
  for (const Fault& f : faults_)
    if (f.rank < 0 || f.rank == rank) kept.push_back(f);
  faults_ = kept;
}

double FaultPlan::comm_delay() const {
  double d = 0;
  for (const Fault& f : faults_)
    if (f.kind == FaultKind::kSlowComm) d += f.seconds;
  return d;
}

double FaultPlan::slowdown() const {
  double s = 1;
  for (const Fault& f : faults_)
    if (f.kind == FaultKind::kSlowRank) s *= f.factor;
  return s;
}

FaultPlan FaultPlan::from_env() {
  const char* s = std::getenv("TANDEM_FAULTS");
  return s ? parse(s) : FaultPlan();
}

void FaultPlan::bind(const std::string& run_dir, EventLog* events, const std::string& marker) {
  events_ = events;
  marker_path_ = run_dir + "/" + marker;
  fired_.clear();
  if (path_exists(marker_path_)) {
    std::stringstream ss(read_file(marker_path_));
    for (std::string line; std::getline(ss, line);)
      if (!line.empty()) fired_.push_back(line);
  }
}

void FaultPlan::mark_fired(const Fault& f, const std::string& detail) {
  const bool once = !f.every && !f.random && f.kind != FaultKind::kBadBatch;
  if (once && !marker_path_.empty()) {
    {
      std::lock_guard<std::mutex> lock(*mu_);
      fired_.push_back(f.spec);
    }
    // Appended and synced before the fault acts: a crash it causes must not repeat it.
    int fd = ::open(marker_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      std::string line = f.spec + "\n";
      if (::write(fd, line.data(), line.size()) < 0) {
      }
      ::fsync(fd);
      ::close(fd);
    }
  }
  if (events_) events_->emit("fault_injected", {{"fault", f.spec}, {"detail", detail}});
}

const Fault* FaultPlan::fire(FaultKind kind, int64_t step) {
  const bool ckpt = kind == FaultKind::kCkptCrash || kind == FaultKind::kCkptCorrupt ||
                    kind == FaultKind::kCkptTruncate || kind == FaultKind::kEnospc ||
                    kind == FaultKind::kErofs;
  for (const Fault& f : faults_) {
    if (f.kind != kind || f.every || f.random || f.seconds > 0) continue;
    if (kind != FaultKind::kCrashResume && (ckpt ? f.step > step : f.step != step)) continue;
    {
      std::lock_guard<std::mutex> lock(*mu_);
      if (std::find(fired_.begin(), fired_.end(), f.spec) != fired_.end()) continue;
    }
    mark_fired(f, "step " + std::to_string(step));
    return &f;
  }
  return nullptr;
}

double FaultPlan::replay_delay() const {
  for (const Fault& f : faults_)
    if (f.kind == FaultKind::kSlowReplay) return f.seconds;
  return 0;
}

bool FaultPlan::poisoned_step(int64_t step) const {
  for (const Fault& f : faults_)
    if (f.kind == FaultKind::kBadBatch && f.step == step) return true;
  return false;
}

void FaultPlan::crash_now(const Fault& f, const std::string& where) {
  bool marked;
  {
    std::lock_guard<std::mutex> lock(*mu_);
    marked = std::find(fired_.begin(), fired_.end(), f.spec) != fired_.end();
  }
  if (!marked || f.every || f.random) mark_fired(f, where);
  std::fflush(stderr);
  ::kill(::getpid(), SIGKILL);
  std::abort();
}

FaultPlan::Timers::~Timers() {
  cancel = true;
  for (auto& t : threads) t.join();
}

void FaultPlan::start_timers() {
  if (!timers_) timers_ = std::make_shared<Timers>();
  for (const Fault& f : faults_) {
    if (f.kind != FaultKind::kCrash || f.seconds <= 0) continue;
    if (!f.every && !f.random &&
        std::find(fired_.begin(), fired_.end(), f.spec) != fired_.end())
      continue;
    double delay = f.seconds;
    if (f.random) {
      std::mt19937_64 gen((uint64_t)::getpid() * 0x9E3779B97F4A7C15ull ^
                          (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count());
      delay = std::uniform_real_distribution<double>(0.0, f.seconds)(gen);
    }
    Fault copy = f;
    Timers* timers = timers_.get();
    timers_->threads.emplace_back([this, timers, copy, delay] {
      auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(delay);
      while (std::chrono::steady_clock::now() < until) {
        if (timers->cancel) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3f s after start", delay);
      crash_now(copy, buf);
    });
  }
}

void flip_bit(Backend& be, float* device_array, size_t index, int bit) {
  uint32_t u;
  be.to_host(&u, device_array + index, sizeof u);
  u ^= 1u << bit;
  be.to_device(device_array + index, &u, sizeof u);
}

}  // namespace tandem
