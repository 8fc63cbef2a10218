// BackgroundCollectives (see background.h).
#include "tandem/dist/background.h"

namespace tandem {

BackgroundCollectives::BackgroundCollectives() : thread_([this] { loop(); }) {}

BackgroundCollectives::~BackgroundCollectives() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
    jobs_.clear();
  }
  cv_.notify_all();
  thread_.join();
}

void BackgroundCollectives::push(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (error_) return;  // the queue ended with an error: drain() reports it
    jobs_.push_back(std::move(job));
  }
  cv_.notify_all();
}

void BackgroundCollectives::drain() {
  std::unique_lock<std::mutex> g(mu_);
  cv_.wait(g, [&] { return jobs_.empty() && !busy_; });
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void BackgroundCollectives::loop() {
  std::unique_lock<std::mutex> g(mu_);
  for (;;) {
    cv_.wait(g, [&] { return stop_ || !jobs_.empty(); });
    if (stop_) return;
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    busy_ = true;
    g.unlock();
    std::exception_ptr err;
    try {
      job();
    } catch (...) {
      err = std::current_exception();
    }
    g.lock();
    busy_ = false;
    if (err && !error_) {
      error_ = err;
      jobs_.clear();
    }
    cv_.notify_all();
  }
}

}  // namespace tandem
