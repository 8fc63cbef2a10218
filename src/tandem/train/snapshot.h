// The in-memory snapshot: parameters, AdamW moments and the trainer's bookkeeping, copied from
// the device every few steps into host memory. It is what the guard rolls back to, and when the
// memory is a memfd inherited from the supervisor it outlives a crashed training process, so a
// restart continues from the last snapshot instead of the last disk checkpoint.
//
// Two slots, written alternately. A slot is a seqlock: its sequence number is odd while it is
// being written, so a slot torn by a crash is never read and the other slot still holds the
// previous complete snapshot.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace tandem {

class Backend;

class SnapshotStore {
 public:
  // fd >= 0: shared memory handed down by the supervisor (kept across restarts); fd < 0:
  // private memory of this process. n_floats: parameters per tensor set (p, m and v each).
  SnapshotStore(int fd, size_t n_floats);
  ~SnapshotStore();
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // Copies p, m, v (device pointers) and `meta` (JSON text, the trainer's state) into the slot
  // not holding the newest snapshot.
  void save(Backend& be, const float* p, const float* m, const float* v, const std::string& meta);
  // The newest complete snapshot's metadata, if any.
  std::optional<std::string> latest_meta() const;
  // Copies the newest complete snapshot to the device and returns its metadata.
  std::optional<std::string> restore(Backend& be, float* p, float* m, float* v) const;
  size_t bytes() const { return bytes_; }

 private:
  struct SlotHeader;
  SlotHeader* slot(int i) const;
  int newest() const;  // -1 when no slot is complete
  size_t n_ = 0, slot_bytes_ = 0, bytes_ = 0;
  char* base_ = nullptr;
};

// TANDEM_SNAPSHOT_FD from the environment, or -1.
int inherited_snapshot_fd();

}  // namespace tandem
