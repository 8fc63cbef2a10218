// EventLog: whole-record appends with write(2).
#include "tandem/train/events.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <sstream>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"

namespace tandem {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

EventLog::EventLog(const std::string& path) {
  if (path.empty()) return;  // a rank that writes nothing
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("[events] cannot open '" + path + "': " + std::strerror(errno));
}

EventLog::~EventLog() {
  if (fd_ >= 0) ::close(fd_);
}

void EventLog::emit(const std::string& kind, nlohmann::ordered_json fields) {
  if (fd_ < 0) return;
  nlohmann::ordered_json j;
  j["t"] = fields.contains("t") ? fields["t"] : nlohmann::ordered_json(std::round(unix_now() * 1000.0) / 1000.0);
  j["event"] = kind;
  j["pid"] = fields.contains("pid") ? fields["pid"] : nlohmann::ordered_json((int64_t)::getpid());
  for (auto it = fields.begin(); it != fields.end(); ++it)
    if (it.key() != "t" && it.key() != "pid") j[it.key()] = it.value();
  for (auto it = tags_.begin(); it != tags_.end(); ++it)
    if (!j.contains(it.key())) j[it.key()] = it.value();
  std::string line = j.dump() + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  // A short write on a local file only happens when the disk is full; the event is lost then,
  // which must not stop training.
  ssize_t n;
  do n = ::write(fd_, line.data(), line.size());
  while (n < 0 && errno == EINTR);
}

std::vector<nlohmann::json> read_events(const std::string& path) {
  std::vector<nlohmann::json> out;
  if (!path_exists(path)) return out;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    try {
      out.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception&) {
      // a record torn by a full disk: skip it
    }
  }
  return out;
}

}  // namespace tandem
