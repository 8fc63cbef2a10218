// RunLock: a second writer is refused with the holder named; a holder that died while a
// process it started still has the lock is waited for, not refused.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tandem/core/error.h"
#include "tandem/core/run_lock.h"

namespace fs = std::filesystem;
using tandem::RunLock;

namespace {

std::string fresh_dir(const char* name) {
  fs::path d = fs::temp_directory_path() / ("tandem-lock-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(d);
  return d.string();
}

}  // namespace

TEST(RunLock, SecondWriterIsRefusedWithTheHolderNamed) {
  const std::string d = fresh_dir("second");
  fs::create_directories(d);
  RunLock first(d, "tandem train", false);
  try {
    RunLock second(d, "tandem train", false);
    FAIL() << "a second writer got the lock";
  } catch (const tandem::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("is in use by process " + std::to_string(::getpid())), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("one writer per run"), std::string::npos) << msg;
  }
  fs::remove_all(d);
}

TEST(RunLock, AnUnusedDirectoryItCreatedIsRemovedAgain) {
  const std::string d = fresh_dir("created");
  { RunLock lock(d, "tandem train", false); EXPECT_TRUE(lock.created_dir()); }
  EXPECT_FALSE(fs::exists(d)) << "an empty run directory was left behind";
}

TEST(RunLock, ADeadHoldersChildIsWaitedFor) {
  const std::string d = fresh_dir("orphan");
  fs::create_directories(d);
  int release[2];
  ASSERT_EQ(::pipe(release), 0);
  pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    // The "supervisor": takes the lock, starts a "worker" that inherits it, and dies.
    ::close(release[1]);
    RunLock lock(d, "tandem train", false);
    lock.share_with_child();
    if (::fork() == 0) {
      char c;
      (void)!::read(release[0], &c, 1);  // holds the inherited lock until released
      ::_exit(0);
    }
    ::_exit(0);  // no destructor: the lock stays with the worker
  }
  ::close(release[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(holder, &status, 0), holder);
  ASSERT_TRUE(WIFEXITED(status));
  // The holder is gone; its worker still holds the lock until the wait has begun.
  std::atomic<int> waits{0};
  RunLock lock(d, "tandem train", false, [&] {
    ++waits;
    ::close(release[1]);  // the worker exits
  });
  EXPECT_EQ(waits.load(), 1);
  fs::remove_all(d);
}

TEST(RunLock, ALiveHolderIsNotWaitedFor) {
  const std::string d = fresh_dir("alive");
  fs::create_directories(d);
  RunLock first(d, "tandem train", false);
  int waits = 0;
  EXPECT_THROW(RunLock(d, "tandem train", false, [&] { ++waits; }), tandem::Error);
  EXPECT_EQ(waits, 0);
  fs::remove_all(d);
}
