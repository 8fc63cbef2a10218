// Heartbeat: non-blocking writes to an inherited pipe.
#include "tandem/train/heartbeat.h"

#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

namespace tandem {

Heartbeat::Heartbeat() {
  const char* s = std::getenv("TANDEM_HEARTBEAT_FD");
  if (!s || !*s) return;
  int fd = std::atoi(s);
  if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) return;
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::signal(SIGPIPE, SIG_IGN);  // a vanished supervisor must not kill training
  fd_ = fd;
}

void Heartbeat::send(const std::string& line) {
  if (fd_ < 0) return;
  std::string msg = line + "\n";
  if (::write(fd_, msg.data(), msg.size()) < 0) {
    // EAGAIN: the supervisor is behind; the next line will do. EPIPE: it is gone.
  }
}

}  // namespace tandem
