// CheckpointWriter: one background thread, one job at a time.
#include "tandem/train/ckpt_writer.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "tandem/backend/backend.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/hash.h"
#include "tandem/train/events.h"
#include "tandem/train/faults.h"

namespace tandem {

namespace {
std::string hash_parts(const std::vector<std::string_view>& parts) {
  Sha256 h;
  for (auto p : parts) h.update(p.data(), p.size());
  return h.hex();
}

// Hashes a state file whose tensor views point into device memory: the header as is, the data
// through a host bounce buffer.
std::string hash_device_file(Backend& be, const StateFile& f) {
  constexpr size_t kChunk = size_t(1) << 20;
  std::vector<char> buf(kChunk);
  Sha256 h;
  h.update(f.header.data(), f.header.size());
  for (const auto& t : f.tensors)
    for (size_t off = 0; off < t.data.size(); off += kChunk) {
      const size_t c = std::min(kChunk, t.data.size() - off);
      be.to_host(buf.data(), t.data.data() + off, c);
      h.update(buf.data(), c);
    }
  return h.hex();
}
}  // namespace

StateFingerprint fingerprint(const ParamLayout& layout, const float* p, const float* m,
                             const float* v) {
  return {hash_parts(model_file(layout, p).parts()),
          hash_parts(optimizer_file(layout, m, v).parts())};
}

StateFingerprint fingerprint(Backend& be, const ParamLayout& layout, const float* p,
                             const float* m, const float* v) {
  return {hash_device_file(be, model_file(layout, p)),
          hash_device_file(be, optimizer_file(layout, m, v))};
}

CheckpointWriter::CheckpointWriter(std::string run_dir, const ParamLayout& layout,
                                   std::string tokenizer_path, int keep_last, int64_t keep_every,
                                   EventLog& events, FaultPlan& faults)
    : run_dir_(std::move(run_dir)),
      tokenizer_path_(std::move(tokenizer_path)),
      layout_(layout),
      keep_last_(keep_last),
      keep_every_(keep_every),
      events_(events),
      faults_(faults) {
  thread_ = std::thread([this] { loop(); });
}

CheckpointWriter::~CheckpointWriter() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !pending_; });
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CheckpointWriter::submit(Backend& be, const float* p, const float* m, const float* v,
                              const CheckpointState& state,
                              const std::function<void()>& on_progress) {
  wait(on_progress);
  const size_t n = layout_.total;
  p_.resize(n);
  m_.resize(n);
  v_.resize(n);
  be.to_host(p_.data(), p, n * sizeof(float));
  be.to_host(m_.data(), m, n * sizeof(float));
  be.to_host(v_.data(), v, n * sizeof(float));
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = state;
    pending_ = true;
  }
  cv_.notify_all();
}

void CheckpointWriter::wait(const std::function<void()>& on_progress) {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t seen = progress_;
  while (pending_) {
    cv_.wait(lock, [&] { return !pending_ || progress_ != seen; });
    if (progress_ != seen && on_progress) {
      seen = progress_;
      lock.unlock();
      on_progress();
      lock.lock();
    }
    seen = progress_;
  }
}

void CheckpointWriter::advance() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++progress_;
  }
  cv_.notify_all();
}

void CheckpointWriter::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return pending_ || quit_; });
      if (quit_ && !pending_) return;
    }
    write_one();
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_ = false;
    }
    cv_.notify_all();
  }
}

void CheckpointWriter::write_one() {
  auto t0 = std::chrono::steady_clock::now();
  const int64_t step = state_.step;
  const CheckpointState& st = state_;
  std::string dir, error;
  nlohmann::json fp;
  try {
    if (faults_.fire(FaultKind::kEnospc, step))
      inject_write_fault(run_dir_ + "/" + checkpoint_name(step), ENOSPC);
    if (faults_.fire(FaultKind::kErofs, step))
      inject_write_fault(run_dir_ + "/" + checkpoint_name(step), EROFS);
    const Fault* crash = faults_.fire(FaultKind::kCkptCrash, step);
    auto after_file = [&](const std::string& file) {
      advance();
      if (crash && file == "model.safetensors")
        faults_.crash_now(*crash, "writing " + checkpoint_name(step) + " (after " + file + ")");
    };
    dir = save_checkpoint(run_dir_, st, layout_, p_.data(), m_.data(), v_.data(),
                          tokenizer_path_, after_file);
    inject_write_fault("", 0);  // disarm a fault no write consumed
    // Read back what landed: a checkpoint whose manifest does not parse or lists a missing
    // file is set aside at once. (The files were hashed as they were written; resume checks
    // those hashes against the disk.)
    try {
      fp = read_manifest(dir, false)["extra"]["fingerprint"];
      advance();
    } catch (const Error& e) {
      events_.emit("checkpoint_rejected", {{"dir", dir}, {"reason", e.what()}});
      set_aside(dir);
      throw;
    }
    if (faults_.fire(FaultKind::kCkptCorrupt, step)) {
      std::string path = dir + "/model.safetensors";
      std::string bytes = read_file(path);
      bytes[bytes.size() / 2] ^= 0x40;
      atomic_write_file(path, bytes);
    }
    if (faults_.fire(FaultKind::kCkptTruncate, step)) {
      std::string path = dir + "/optimizer.safetensors";
      std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
    }
    prune_checkpoints(run_dir_, keep_last_, keep_every_);
  } catch (const std::exception& e) {
    inject_write_fault("", 0);
    error = e.what();
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (error.empty()) {
    events_.emit("checkpoint_saved", {{"step", step},
                                      {"dir", dir},
                                      {"write_s", secs},
                                      {"fingerprint", fp}});
  } else {
    events_.emit("checkpoint_failed", {{"step", step}, {"error", error}});
    std::fprintf(stderr, "\n[checkpoint] step %lld not saved: %s (earlier checkpoints kept)\n",
                 (long long)step, error.c_str());
  }
  std::lock_guard<std::mutex> lock(mu_);
  busy_s_ += secs;
  attempt_step_ = step;
  failed_ = !error.empty();
  error_ = error;
  if (error.empty()) {
    saved_step_ = step;
    saved_dir_ = dir;
  }
}

bool CheckpointWriter::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}
int64_t CheckpointWriter::last_attempt_step() const {
  std::lock_guard<std::mutex> lock(mu_);
  return attempt_step_;
}
int64_t CheckpointWriter::last_saved_step() const {
  std::lock_guard<std::mutex> lock(mu_);
  return saved_step_;
}
std::string CheckpointWriter::last_saved_dir() const {
  std::lock_guard<std::mutex> lock(mu_);
  return saved_dir_;
}
bool CheckpointWriter::last_failed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_;
}
std::string CheckpointWriter::last_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}
double CheckpointWriter::busy_seconds() const {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_s_;
}

}  // namespace tandem
