// The training process's side of the supervisor's heartbeat: short text lines on the pipe the
// supervisor passed down in TANDEM_HEARTBEAT_FD ("ready STEP", "step STEP", "beat"). Without a
// supervisor it does nothing. Writes never block: a full pipe drops the line.
#pragma once

#include <cstdint>
#include <string>

namespace tandem {

class Heartbeat {
 public:
  Heartbeat();  // reads TANDEM_HEARTBEAT_FD
  bool active() const { return fd_ >= 0; }
  void send(const std::string& line);
  void ready(int64_t step) { send("ready " + std::to_string(step)); }
  void step(int64_t step) { send("step " + std::to_string(step)); }
  void beat() { send("beat"); }

 private:
  int fd_ = -1;
};

}  // namespace tandem
