// The HTTP server (cpp-httplib): OpenAI-compatible completions and chat completions (JSON or
// server-sent events), /v1/models, /health and Prometheus /metrics, with bearer-token auth,
// size limits and OpenAI-shaped errors. Generation is delegated to the Scheduler.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "tandem/data/tokenizer.h"
#include "tandem/serve/protocol.h"
#include "tandem/serve/scheduler.h"

namespace tandem::serve {

inline constexpr double kAutoStreamIntervalMs = 10;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 picks a free port
  std::string api_key;  // non-empty: /v1/* and /metrics need "Authorization: Bearer KEY"
  size_t max_body_bytes = 1 << 20;
  int max_prompt_tokens = 0;  // 0 = the context minus one
  int read_timeout_s = 10;    // a client that stalls mid-request is dropped
  int write_timeout_s = 10;   // a client that stops reading is dropped and its request cancelled
  int http_threads = 0;       // 0 = slots + queue + 8
  // A stream sends what accumulated at most this often (the first token and the end go out
  // at once): fewer wakeups and writes per token when many streams share few cores. Negative
  // means automatic: every token while one sequence runs alone, kAutoStreamIntervalMs while
  // several share the steps.
  double stream_interval_ms = -1;
};

class Server {
 public:
  Server(Scheduler& sched, const Tokenizer& tok, const Limits& limits, int context,
         const ServerOptions& opt);
  ~Server();
  // Binds, then calls on_ready(port) and serves until stop(). Throws naming host:port when
  // the address cannot be bound.
  void run(const std::function<void(int)>& on_ready);
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::serve
