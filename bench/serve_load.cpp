// Load generator for `tandem serve`: N concurrent streaming clients send completion requests
// back to back for a fixed time and count what comes back. Written in C++ (cpp-httplib, one
// thread per client, no per-event JSON parsing) so that on a small machine the clients take
// as little CPU as possible away from the server they measure.
//
//   serve_load --port P --streams 16 --seconds 20 [--host 127.0.0.1] [--max-tokens 64]
//
// Prints one JSON object: streams, requests, tokens (completion tokens reported by the
// server's usage chunks), wall_s, tokens_per_s, ttft_p50_ms, ttft_p99_ms, errors.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

const char* kPrompts[] = {"And the LORD said unto Moses", "In the beginning",
                          "Blessed are they that mourn", "And it came to pass in those days",
                          "the king of Israel", "unto the people"};

struct Totals {
  std::mutex mu;
  std::vector<double> ttft_ms;
  long long tokens = 0, requests = 0, errors = 0;
};

// True when an SSE event carries generated text (a non-empty "text" field).
bool has_text(const std::string& ev) {
  const auto k = ev.find("\"text\":\"");
  return k != std::string::npos && k + 8 < ev.size() && ev[k + 8] != '"';
}

void client(const std::string& host, int port, double seconds, int idx, int max_tokens,
            Totals& tot) {
  httplib::Client cli(host, port);
  cli.set_read_timeout(120, 0);
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  for (int n = 0; Clock::now() < end; ++n) {
    nlohmann::json body = {{"model", "bench"},
                           {"prompt", kPrompts[(idx + n) % 6]},
                           {"max_tokens", max_tokens},
                           {"temperature", 1.0},
                           {"seed", idx * 1000 + n},
                           {"stream", true},
                           {"stream_options", {{"include_usage", true}}}};
    std::string buf;
    double ttft = -1;
    long long tokens = -1;
    const auto t0 = Clock::now();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
      buf.append(data, len);
      size_t start = 0;
      for (size_t sep; (sep = buf.find("\n\n", start)) != std::string::npos; start = sep + 2) {
        const std::string ev = buf.substr(start, sep - start);
        if (ev.rfind("data: {", 0) != 0) continue;
        if (ttft < 0 && has_text(ev))
          ttft = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (ev.find("\"usage\":{") != std::string::npos) {
          auto j = nlohmann::json::parse(ev.substr(6));
          tokens = j["usage"]["completion_tokens"].get<long long>();
        }
      }
      buf.erase(0, start);
      return true;
    };
    httplib::Response res;
    httplib::Error err;
    const bool ok = cli.send(req, res, err) && res.status == 200 && tokens >= 0;
    std::lock_guard<std::mutex> lock(tot.mu);
    ++tot.requests;
    if (!ok) {
      ++tot.errors;
      continue;
    }
    tot.tokens += tokens;
    if (ttft >= 0) tot.ttft_ms.push_back(ttft);
  }
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, (size_t)(q * (double)v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 0, streams = 1, max_tokens = 64;
  double seconds = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--host") host = v;
    else if (k == "--port") port = std::atoi(v.c_str());
    else if (k == "--streams") streams = std::atoi(v.c_str());
    else if (k == "--seconds") seconds = std::atof(v.c_str());
    else if (k == "--max-tokens") max_tokens = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "serve_load: unknown option '%s'\n", k.c_str());
      return 2;
    }
  }
  if (port <= 0 || streams <= 0 || seconds <= 0 || max_tokens <= 0) {
    std::fprintf(stderr, "serve_load: need --port P, and positive --streams/--seconds\n");
    return 2;
  }
  Totals tot;
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < streams; ++i)
    threads.emplace_back(client, host, port, seconds, i, max_tokens, std::ref(tot));
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  nlohmann::json out = {{"streams", streams},
                        {"requests", tot.requests},
                        {"tokens", tot.tokens},
                        {"wall_s", wall},
                        {"tokens_per_s", (double)tot.tokens / wall},
                        {"ttft_p50_ms", quantile(tot.ttft_ms, 0.5)},
                        {"ttft_p99_ms", quantile(tot.ttft_ms, 0.99)},
                        {"errors", tot.errors}};
  std::printf("%s\n", out.dump().c_str());
  return tot.errors > 0 && tot.tokens == 0 ? 1 : 0;
}
