// Collectives that run while the caller computes: jobs queued to one thread of their own and
// run in the order queued (so every rank issues the same collectives in the same order).
// A job that throws ends the queue: later jobs are dropped and drain() rethrows the first
// error. Used to reduce a backward pass's gradient buckets as they become final.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace tandem {

class BackgroundCollectives {
 public:
  BackgroundCollectives();
  ~BackgroundCollectives();  // waits for the running job; drops the queued ones
  BackgroundCollectives(const BackgroundCollectives&) = delete;
  BackgroundCollectives& operator=(const BackgroundCollectives&) = delete;

  void push(std::function<void()> job);
  // Waits until every queued job has run; rethrows the first job's exception (once).
  void drain();

 private:
  void loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace tandem
