// Continuous batching: one thread owns the BatchEngine and, every step, runs one forward over
// the next token of every decoding sequence plus prompt chunks of new ones (within a token
// budget). Requests join between steps, leave when done or cancelled, and wait in a bounded
// queue when every KV slot is busy.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tandem/data/tokenizer.h"
#include "tandem/infer/engine.h"
#include "tandem/serve/protocol.h"

namespace tandem::serve {

// One request as the scheduler sees it; shared between the HTTP handler and the engine thread.
class Job {
 public:
  Job(GenRequest req, std::vector<std::vector<int32_t>> prompts);
  const GenRequest& request() const { return req_; }
  const std::vector<std::vector<int32_t>>& prompts() const { return prompts_; }
  int num_choices() const { return (int)prompts_.size() * req_.n; }
  int64_t prompt_tokens() const;

  struct Update {
    int choice = 0;
    std::string delta;
    std::vector<TokenLogprob> logprobs;
    std::string finish_reason;  // set once, with the choice's last update
  };
  // Waits up to `timeout` for news and moves it into `out`. Returns true once every choice
  // has finished (or the job failed: error() is then set). With `min_gap`, a call made sooner
  // than that after the previous delivery first waits out the gap (unless the job ends), so
  // tokens are delivered in batches and the waiting thread is not woken for each one.
  bool wait(std::vector<Update>& out, std::chrono::milliseconds timeout,
            std::chrono::microseconds min_gap = std::chrono::microseconds(0));
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  std::string error() const;
  int64_t completion_tokens() const { return completion_tokens_; }

 private:
  friend class Scheduler;
  void publish(int choice, std::string delta, TokenLogprob* lp, const std::string& finish);
  void fail(const std::string& msg);

  GenRequest req_;
  std::vector<std::vector<int32_t>> prompts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Update> pending_;
  int finished_ = 0;
  std::string error_;
  std::atomic<bool> cancelled_{false};
  std::atomic<int64_t> completion_tokens_{0};
  std::chrono::steady_clock::time_point arrival_ = std::chrono::steady_clock::now();
  bool first_token_ = false;
  bool eager_ = false;      // a waiter wants every update (publish notifies); under mu_
  bool delivered_ = false;  // under mu_, with the time of the last delivery
  std::chrono::steady_clock::time_point last_delivery_;
};

struct SchedulerOptions {
  int max_queue = 64;  // sequences waiting for a slot before requests get 429
  int threads = 0;     // threads that sample the rows of a step (0 = OpenMP's default)
  // Test hook (TANDEM_SERVE_HOLD_FILE): while this file exists, sequences are admitted into
  // slots but no step runs, so a test can hold the slots busy for as long as it needs.
  std::string hold_file;
};

struct SchedulerStats {
  int64_t queued = 0, active = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0, steps = 0, cancelled = 0;
  int64_t step_tokens = 0;       // tokens through the forward, summed over steps (batch sizes)
  double forward_seconds = 0;    // time in the batched forward
  double step_seconds = 0;       // time in whole steps: forward, sampling, stop rules, publishing
  double tokens_per_second = 0;  // generated tokens over the last 10 s
  // Time to first token: count, sum and cumulative histogram counts for kTtftBuckets.
  int64_t ttft_count = 0;
  double ttft_sum = 0;
  std::vector<int64_t> ttft_buckets;
};
inline const std::vector<double> kTtftBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                 0.5,   1,    2.5,   5,    10};

class Scheduler {
 public:
  Scheduler(BatchEngine& engine, const Tokenizer& tok, const SchedulerOptions& opt);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // False when the queue has no room for the job's sequences (the caller answers 429).
  bool submit(const std::shared_ptr<Job>& job);
  SchedulerStats stats() const;
  int slots() const { return engine_.options().slots; }
  // Sequences in the step being run (0 when idle); read without the lock.
  int running() const { return running_.load(std::memory_order_relaxed); }

 private:
  struct Seq;
  void loop();
  void run_step(std::vector<Seq*>& active);

  BatchEngine& engine_;
  const Tokenizer& tok_;
  SchedulerOptions opt_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Seq>> queue_;
  std::vector<std::unique_ptr<Seq>> slots_;  // by KV slot; null when free
  bool stop_ = false;
  // Metrics.
  int64_t prompt_tokens_ = 0, completion_tokens_ = 0, steps_ = 0, cancelled_ = 0;
  int64_t step_tokens_ = 0;
  double forward_seconds_ = 0, step_seconds_ = 0;
  int64_t ttft_count_ = 0;
  double ttft_sum_ = 0;
  std::vector<int64_t> ttft_buckets_;
  std::deque<std::pair<double, int>> recent_;  // (time, tokens) per step, last 10 s
  std::atomic<int> running_{0};
  int32_t turn_end_ = -1;  // the chat format's end-of-turn token, or -1
  std::thread thread_;
};

}  // namespace tandem::serve
