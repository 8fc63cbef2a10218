// File-system helpers on POSIX calls, so every write can be fsynced.
#include "tandem/core/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "tandem/core/error.h"

namespace tandem {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("read error on '" + path + "'");
  return ss.str();
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) fail("cannot create directory '" + path + "': " + ec.message());
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("cannot open '" + path + "' to fsync: " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) fail("fsync failed on '" + path + "': " + std::strerror(err));
}

namespace {
std::mutex g_fault_mu;
std::string g_fault_prefix;
int g_fault_err = 0;

// The injected errno for a write to `path`, consumed; 0 when none is armed for it.
int take_write_fault(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_fault_mu);
  if (g_fault_err == 0 || path.rfind(g_fault_prefix, 0) != 0) return 0;
  int err = g_fault_err;
  g_fault_err = 0;
  return err;
}
}  // namespace

void inject_write_fault(const std::string& path_prefix, int err) {
  std::lock_guard<std::mutex> lock(g_fault_mu);
  g_fault_prefix = path_prefix;
  g_fault_err = err;
}

void atomic_write_file(const std::string& path, std::string_view data) {
  atomic_write_parts(path, {data});
}

void atomic_write_parts(const std::string& path, const std::vector<std::string_view>& parts,
                        const std::function<void(std::string_view)>& on_chunk) {
  constexpr size_t kChunk = size_t(4) << 20;
  std::string tmp = path + ".tmp";
  const int injected = take_write_fault(path);
  if (injected != 0 && injected != ENOSPC) errno = injected;
  int fd = injected != 0 && injected != ENOSPC
               ? -1
               : ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("cannot create '" + tmp + "': " + std::strerror(errno));
  size_t total = 0;
  for (auto p : parts) total += p.size();
  // An injected ENOSPC lets the first half of the file through, then fails as a full disk does.
  const size_t limit = injected == ENOSPC ? total / 2 : total;
  size_t written = 0;
  for (auto part : parts) {
    for (size_t pos = 0; pos < part.size();) {
      const std::string_view chunk = part.substr(pos, kChunk);
      if (on_chunk) on_chunk(chunk);
      size_t off = 0;
      while (off < chunk.size()) {
        const size_t want = std::min(chunk.size() - off, limit - std::min(limit, written));
        ssize_t n = want == 0 ? (errno = ENOSPC, -1) : ::write(fd, chunk.data() + off, want);
        if (n < 0) {
          if (errno == EINTR) continue;
          int err = errno;
          ::close(fd);
          ::unlink(tmp.c_str());
          fail("write failed on '" + tmp + "': " + std::strerror(err));
        }
        off += static_cast<size_t>(n);
        written += static_cast<size_t>(n);
      }
      pos += chunk.size();
    }
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail("fsync failed on '" + tmp + "': " + std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(err));
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  fsync_path(dir.empty() ? "." : dir);
}

void remove_all(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

}  // namespace tandem
