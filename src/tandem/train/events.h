// The run's event log (events.jsonl): one JSON object per line for every fault, restart,
// rollback, skipped batch, fingerprint and checkpoint, stamped with wall-clock time and pid.
// The supervisor and the training process append to the same file; each record is one write(2)
// on an O_APPEND descriptor, so records never interleave and survive a SIGKILL of the writer.
#pragma once

#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tandem {

class EventLog {
 public:
  EventLog() = default;  // a log that discards (runs without a run directory)
  explicit EventLog(const std::string& path);
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Appends {"t": unix seconds, "event": kind, "pid": ..., ...fields}; fields may set "t" and
  // "pid" themselves (events recorded before the log could be opened). Thread-safe.
  void emit(const std::string& kind, nlohmann::ordered_json fields = nlohmann::ordered_json::object());
  // A field added to every later record (e.g. the data-parallel rank that writes it).
  void tag(const std::string& key, nlohmann::ordered_json value) { tags_[key] = std::move(value); }

 private:
  int fd_ = -1;
  nlohmann::ordered_json tags_ = nlohmann::ordered_json::object();
  std::mutex mu_;
};

// Every well-formed record of an events.jsonl (a torn last line is ignored); empty if absent.
std::vector<nlohmann::json> read_events(const std::string& path);

double unix_now();  // wall-clock seconds since the epoch

}  // namespace tandem
