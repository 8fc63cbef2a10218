// Built-in fault injection, from the TANDEM_FAULTS environment variable or `tandem train
// --inject`: a comma-separated list of KIND@WHEN (docs/resilience.md lists them). One-shot faults
// are recorded in RUN_DIR/faults.fired before they act, so a restarted process does not fire
// them again; that is what makes a fault transient. Repeating faults (crash@every:, crash@random:,
// bad_batch@) act in every process.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tandem {

class EventLog;

enum class FaultKind {
  kCrash,         // SIGKILL: at step N, after T seconds, every T seconds, at a random time
  kCrashResume,   // SIGKILL while a restarted process loads its state
  kHang,          // stop making progress at step N
  kNanGrad,       // a NaN in the gradients of step N
  kInfGrad,       // an Inf in the gradients of step N
  kBitflipParam,  // flip bit B of one parameter before step N
  kBitflipGrad,   // flip bit B of one gradient of step N
  kBitflipAct,    // flip bit B of one activation (a logit) of step N
  kSpike,         // step N trains once on garbage tokens (a transient loss spike)
  kBadBatch,      // the batch step N draws is garbage every time it is drawn (a data fault)
  kCkptCrash,     // SIGKILL in the middle of writing the first checkpoint at step >= N
  kCkptCorrupt,   // flip a byte of that checkpoint's weights after it is written
  kCkptTruncate,  // truncate that checkpoint's optimizer state after it is written
  kEnospc,        // the disk is full during that checkpoint's write
  kErofs,         // the directory is read-only during that checkpoint's write
  kSlowReplay,    // every recomputation of a step (rollback replay, replay check) takes T s more
  kSlowComm,      // data parallel: every collective of the rank starts T s late (a slow link)
  kSlowRank,      // data parallel: the rank computes every step F times slower (a straggler)
  kPause,         // every rank that has the run directory waits before step N until
                  // RUN_DIR/faults.release exists (a test holds the run at a known step)
  kBitflipBucket, // data parallel: flip bit B of one value of the rank's gradient bucket of
                  // step N before the sum (64-bit fixed point; the float gradient when plain)
};

struct Fault {
  std::string spec;  // as written, e.g. "nan_grad@40"
  FaultKind kind;
  int64_t step = -1;     // step faults
  double seconds = -1;   // time faults: after this many seconds (or the period / random bound)
  bool every = false;    // crash@every:T
  bool random = false;   // crash@random:T
  int bit = 30;          // bit flips: which bit of the float32 (of the int64 for buckets)
  double factor = 1;     // slow_rank: how many times slower
  int rank = -1;         // data parallel: "rankR:KIND@WHEN" acts on rank R only (-1: every rank)
};

class FaultPlan {
 public:
  FaultPlan() = default;
  static FaultPlan parse(const std::string& spec);  // throws Error "[faults] ..." naming the item
  static FaultPlan from_env();                      // TANDEM_FAULTS, or an empty plan

  bool empty() const { return faults_.empty(); }
  // Keeps the faults for data-parallel rank `rank` (and those for every rank).
  void set_rank(int rank);
  // slow_comm@Ts: the delay before each collective of this rank (0: none).
  double comm_delay() const;
  // slow_rank@Fx: how many times slower this rank computes (1: not slowed).
  double slowdown() const;
  // Loads RUN_DIR/faults.fired and sends fault events to `events`.
  // `marker` names the file (in run_dir) that records one-shot faults already fired; each
  // rank of a data-parallel run keeps its own.
  void bind(const std::string& run_dir, EventLog* events,
            const std::string& marker = "faults.fired");

  // A one-shot fault of this kind due at `step` (for checkpoint faults: at or before `step`)
  // that has not fired yet: records it as fired, logs it and returns it. Null otherwise.
  const Fault* fire(FaultKind kind, int64_t step);
  // bad_batch: is the batch of the undisturbed run's step `step` poisoned? (never consumed)
  bool poisoned_step(int64_t step) const;
  // slow_replay@Ts: the extra seconds each recomputation of a step takes (0: none). Repeats.
  double replay_delay() const;
  // Starts the timer threads of time-based crashes. They stop when the plan is destroyed.
  void start_timers();
  // Records the fault as fired, logs it, then SIGKILLs this process.
  [[noreturn]] void crash_now(const Fault& f, const std::string& where);

 private:
  void mark_fired(const Fault& f, const std::string& detail);
  struct Timers {
    std::atomic<bool> cancel{false};
    std::vector<std::thread> threads;
    ~Timers();
  };
  std::vector<Fault> faults_;
  std::shared_ptr<std::mutex> mu_ = std::make_shared<std::mutex>();  // guards fired_
  std::vector<std::string> fired_;
  std::shared_ptr<Timers> timers_;
  std::string marker_path_;
  EventLog* events_ = nullptr;
};

// Flips bit `bit` of element `index` of a device float array (through the backend's copies).
class Backend;
void flip_bit(Backend& be, float* device_array, size_t index, int bit);

}  // namespace tandem
