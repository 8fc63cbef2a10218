// Asynchronous checkpoints: submit() copies the state from the device into host buffers (a
// memcpy on the training thread) and a background thread serializes, hashes, writes, fsyncs,
// re-verifies and prunes while training goes on. A failed write (disk full, read-only
// directory) is logged and leaves the earlier checkpoints untouched; the trainer retries.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tandem/model/params.h"
#include "tandem/ckpt/checkpoint.h"

namespace tandem {

class Backend;
class EventLog;
class FaultPlan;

// SHA-256 of the checkpoint's model.safetensors and optimizer.safetensors as they would be
// written for this state: `sha256sum` of a checkpoint's files gives the same values.
struct StateFingerprint {
  std::string params, optimizer;
};
StateFingerprint fingerprint(const ParamLayout& layout, const float* p, const float* m,
                             const float* v);
// Same, reading device buffers through the backend in chunks.
StateFingerprint fingerprint(Backend& be, const ParamLayout& layout, const float* p,
                             const float* m, const float* v);

class CheckpointWriter {
 public:
  CheckpointWriter(std::string run_dir, const ParamLayout& layout, std::string tokenizer_path,
                   int keep_last, int64_t keep_every, EventLog& events, FaultPlan& faults);
  ~CheckpointWriter();  // waits for the write in flight
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Waits for the previous write, copies p, m, v (device) and starts writing `state`.
  // `on_progress` runs on the caller's thread each time the write in flight moves on (a file
  // written, the manifest verified, old checkpoints pruned): the supervisor's heartbeat.
  void submit(Backend& be, const float* p, const float* m, const float* v,
              const CheckpointState& state, const std::function<void()>& on_progress = {});
  void wait(const std::function<void()>& on_progress = {});  // until no write is in flight

  bool busy() const;  // a write is in flight
  // Outcome of the newest finished write (valid after wait()).
  int64_t last_attempt_step() const;
  int64_t last_saved_step() const;  // -1 when none succeeded in this process
  std::string last_saved_dir() const;
  bool last_failed() const;
  std::string last_error() const;
  double busy_seconds() const;  // total time the writer thread spent writing

 private:
  void loop();
  void write_one();
  void advance();  // the write in flight made progress

  std::string run_dir_, tokenizer_path_;
  const ParamLayout& layout_;
  int keep_last_;
  int64_t keep_every_;
  EventLog& events_;
  FaultPlan& faults_;

  std::vector<float> p_, m_, v_;
  CheckpointState state_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false, quit_ = false, failed_ = false;
  int64_t saved_step_ = -1, attempt_step_ = -1;
  uint64_t progress_ = 0;  // bumped by advance(), under mu_
  std::string saved_dir_, error_;
  double busy_s_ = 0;
  std::thread thread_;
};

}  // namespace tandem
