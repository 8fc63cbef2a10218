// RunLock: flock(LOCK_EX | LOCK_NB), then a check that the path still names the locked file
// (a holder that removes its lock file on exit must not leave a second holder on an unlinked
// one), then the holder's identity written into the file.
#include "tandem/core/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>
#include <thread>

#include "tandem/core/error.h"

namespace tandem {
namespace {

std::string hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown host";
  return buf;
}

std::string read_fd(int fd) {
  std::string s;
  char buf[512];
  ssize_t n;
  off_t off = 0;
  while ((n = ::pread(fd, buf, sizeof buf, off)) > 0) {
    s.append(buf, (size_t)n);
    off += n;
  }
  return s;
}

std::string field(const std::string& text, const std::string& key) {
  const std::string k = key + "=";
  size_t at = text.find(k);
  if (at == std::string::npos) return "";
  size_t end = text.find('\n', at);
  return text.substr(at + k.size(), end == std::string::npos ? std::string::npos : end - at - k.size());
}

bool same_file(int fd, const std::string& path) {
  struct stat a, b;
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

constexpr double kReleaseWaitS = 60;

// True when the holder recorded in the lock file ran on this host and is no longer alive.
bool holder_is_gone(const std::string& pid, const std::string& host) {
  if (pid.empty() || host != hostname()) return false;
  char* end = nullptr;
  long p = std::strtol(pid.c_str(), &end, 10);
  if (p <= 0 || *end) return false;
  return ::kill((pid_t)p, 0) != 0 && errno == ESRCH;
}

// Waits until `path` can be locked (by whoever holds it exiting); true if that happened
// within kReleaseWaitS. Does not keep the lock: the caller takes it again.
bool wait_for_release(const std::string& path, const std::string& pid,
                      const std::function<void()>& on_wait) {
  std::fprintf(stderr,
               "[run] the last writer (process %s) is gone; waiting for a process it started "
               "to release %s\n",
               pid.c_str(), path.c_str());
  if (on_wait) on_wait();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(kReleaseWaitS);
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return true;  // removed by its holder: the caller creates it again
    bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
    ::close(fd);
    if (free) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

}  // namespace

RunLock::RunLock(const std::string& dir, const std::string& what, bool inherit_env,
                 std::function<void()> on_wait)
    : dir_(dir) {
  const std::string path = path_for(dir);
  if (inherit_env) {
    if (const char* s = std::getenv("TANDEM_RUN_LOCK_FD"); s && *s) {
      int fd = std::atoi(s);
      if (fd >= 0 && same_file(fd, path)) {
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        fd_ = fd;
        inherited_ = true;
        return;
      }
    }
  }
  std::error_code ec;
  if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec))
    fail("[run] run directory '" + dir + "' exists and is not a directory");
  if (!std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) fail("[run] cannot create run directory '" + dir + "': " + ec.message());
    created_ = true;
  }
  for (int attempt = 0;; ++attempt) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      fail("[run] cannot open the lock file " + path + ": " + std::strerror(errno) +
           " (a writer needs a writable run directory)");
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      const std::string holder = read_fd(fd);
      ::close(fd);
      if (err != EWOULDBLOCK)
        fail("[run] cannot lock " + path + ": " + std::strerror(err));
      const std::string pid = field(holder, "pid"), host = field(holder, "host"),
                        cmd = field(holder, "command"), since = field(holder, "since");
      if (holder_is_gone(pid, host)) {
        // The recorded writer died (a supervisor killed with its workers): the lock lives
        // on in a worker the kernel is still taking down. Wait for it, not forever.
        if (wait_for_release(path, pid, on_wait)) continue;
        fail("[run] run directory '" + dir + "': its writer, process " + pid +
             ", is gone, but a process it started still holds " + path + " after " +
             std::to_string((int)kReleaseWaitS) + " s; stop that process first");
      }
      std::string who = pid.empty() ? "another process (it has not recorded its PID yet)"
                                    : "process " + pid + " on host " + host +
                                          (cmd.empty() ? "" : " (" + cmd + ", since " + since + ")");
      fail("[run] run directory '" + dir + "' is in use by " + who +
           ": one writer per run; wait for it to finish or stop it first");
    }
    if (same_file(fd, path)) {
      fd_ = fd;
      break;
    }
    ::close(fd);  // the holder we waited on removed its file: lock the new one
    if (attempt > 100) fail("[run] cannot lock " + path + ": it keeps being replaced");
  }
  char since[64];
  std::time_t now = std::time(nullptr);
  std::strftime(since, sizeof since, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  const std::string text = "pid=" + std::to_string(::getpid()) + "\nhost=" + hostname() +
                           "\ncommand=" + what + "\nsince=" + since + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, text.data(), text.size(), 0) < 0) {
    // The lock holds without the record; a second writer is told less about us.
  }
}

RunLock::~RunLock() {
  if (fd_ < 0) return;
  if (!inherited_ && created_) {
    // A run that failed before writing anything leaves no directory behind.
    std::error_code ec;
    bool only_lock = true;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec))
      if (e.path().filename() != ".lock") only_lock = false;
    if (!ec && only_lock) {
      ::unlink(path_for(dir_).c_str());
      ::rmdir(dir_.c_str());
    }
  }
  ::close(fd_);  // the last descriptor of the lock: the kernel releases it
}

void RunLock::share_with_child() const {
  if (fd_ < 0) return;
  int fd = ::dup(fd_);  // dup() clears close-on-exec
  if (fd >= 0) ::setenv("TANDEM_RUN_LOCK_FD", std::to_string(fd).c_str(), 1);
}

}  // namespace tandem
