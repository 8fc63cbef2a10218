// One writer per run directory: an exclusive flock on RUN_DIR/.lock, held for the writer's
// whole life. The kernel drops it when the holder dies, however it dies, so a lock left by a
// crashed process never blocks a resume. The file records the holder's PID and host for the
// message a second writer gets. Readers take no lock.
#pragma once

#include <functional>
#include <string>

namespace tandem {

class RunLock {
 public:
  // Locks `dir` (creating it if it does not exist) for `what` (e.g. "tandem train"). A
  // second writer gets Error "[run] run directory 'DIR' is in use by process PID on host
  // HOST ...". With `inherit_env`, a lock passed down by a parent (TANDEM_RUN_LOCK_FD, set by
  // share_with_child) on the same directory is adopted instead of taken again.
  // A holder that recorded a PID on this host which is no longer alive is a killed
  // supervisor whose worker has not exited yet: the lock is waited for (up to a minute,
  // `on_wait` called once when the wait begins) instead of refused.
  RunLock(const std::string& dir, const std::string& what, bool inherit_env = true,
          std::function<void()> on_wait = {});
  ~RunLock();  // unlocks; removes `dir` again if it created it and nothing else was written
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  // A descriptor of the lock for a child process to inherit (not close-on-exec), its number
  // put in TANDEM_RUN_LOCK_FD. Call in the child between fork and exec.
  void share_with_child() const;
  bool created_dir() const { return created_; }
  bool inherited() const { return inherited_; }
  static std::string path_for(const std::string& dir) { return dir + "/.lock"; }

 private:
  std::string dir_;
  int fd_ = -1;
  bool created_ = false, inherited_ = false;
};

}  // namespace tandem
