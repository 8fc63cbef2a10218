// The rendezvous server and client over cpp-httplib. The server's state is a map of keys and
// the list of joined ranks under one mutex; every wait is a condition variable with a deadline.
#include "tandem/dist/rendezvous.h"

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include <unistd.h>

#include "tandem/core/error.h"

namespace tandem {

std::pair<std::string, int> parse_host_port(const std::string& s, const std::string& what) {
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
    fail("[dist] " + what + " '" + s + "' is not HOST:PORT");
  const std::string host = s.substr(0, colon), port = s.substr(colon + 1);
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (*end || p <= 0 || p > 65535)
    fail("[dist] " + what + " '" + s + "': port '" + port + "' is not a number in 1..65535");
  return {host, (int)p};
}

// ---------------------------------------------------------------------------------------------
struct RendezvousServer::Impl {
  RendezvousOptions opt;
  httplib::Server svr;
  std::thread thread;
  std::atomic<bool> loop_ended{false};
  int port = 0;

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, std::string> kv;
  // Ranks waiting for the next generation, by their order; the first fingerprint is the run's.
  std::map<int, nlohmann::json> joined;
  nlohmann::json reference;  // the first joiner's fingerprint
  int reference_order = -1;
  std::string refusal;       // set once a rank was refused: every waiting rank gets it
  int64_t generation = 0;
  struct Place {
    int64_t generation;
    int rank, world;
  };
  std::map<int, Place> placed;  // order -> its place in the newest group that took it
  std::chrono::steady_clock::time_point last_join = std::chrono::steady_clock::now();
  // Waiting ranks poll again every few seconds; one with no poll in flight for kStaleS has
  // died while it waited and must not be placed in a group.
  static constexpr double kStaleS = 3;
  std::map<int, int> polls;  // order -> join requests in flight
  std::map<int, std::chrono::steady_clock::time_point> seen;
  void prune() {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = joined.begin(); it != joined.end();) {
      const bool stale = polls[it->first] == 0 &&
                         std::chrono::duration<double>(now - seen[it->first]).count() > kStaleS;
      it = stale ? joined.erase(it) : std::next(it);
    }
  }

  // Forms a group of the `k` lowest waiting ranks.
  void form(int k) {
    ++generation;
    int r = 0;
    for (auto it = joined.begin(); it != joined.end() && r < k;) {
      placed[it->first] = {generation, r++, k};
      it = joined.erase(it);
    }
    cv.notify_all();
  }
  // A smaller group, when the full one is not coming (see RendezvousOptions).
  void maybe_form_partial() {
    prune();
    // Rank 0 (the run's writer) is in every group: ranks of a lost machine that come back
    // wait for it rather than start a second run beside it.
    if (opt.min_world <= 0 || !refusal.empty() || (int)joined.size() < opt.min_world ||
        !joined.count(0))
      return;
    const double quiet = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_join).count();
    if (quiet < opt.settle_s) return;
    for (int k = (int)joined.size(); k >= opt.min_world; --k)
      if (opt.divisor % k == 0) return form(k);
  }

  // Whether ranks waiting now would make a group larger than the running one of `world`.
  void handle_waiting(const httplib::Request& r, httplib::Response& res) {
    const int world = r.has_param("world") ? std::stoi(r.get_param_value("world")) : opt.world;
    std::lock_guard<std::mutex> g(mu);
    prune();
    const int n = (int)joined.size();
    bool grow = false;
    for (int k = world + 1; k <= std::min(world + n, opt.world); ++k)
      grow = grow || (k == opt.world || (opt.min_world > 0 && opt.divisor % k == 0));
    nlohmann::json out = {{"waiting", n}, {"grow", grow}, {"generation", generation}};
    res.set_content(out.dump(), "application/json");
  }

  static int timeout_ms(const httplib::Request& r) {
    return r.has_param("timeout_ms") ? std::stoi(r.get_param_value("timeout_ms")) : 30000;
  }

  void handle_set(const httplib::Request& r, httplib::Response& res) {
    {
      std::lock_guard<std::mutex> g(mu);
      kv[r.matches[1]] = r.body;
    }
    cv.notify_all();
    res.set_content("{}", "application/json");
  }

  void handle_get(const httplib::Request& r, httplib::Response& res) {
    const std::string key = r.matches[1];
    std::unique_lock<std::mutex> g(mu);
    if (!cv.wait_for(g, std::chrono::milliseconds(timeout_ms(r)), [&] { return kv.count(key); })) {
      res.status = 408;
      return;
    }
    res.set_content(kv[key], "application/octet-stream");
  }

  // The first field in which `fp` differs from the reference, as a message; "" when equal.
  std::string differs(const nlohmann::json& fp, int order) const {
    for (auto it = reference.begin(); it != reference.end(); ++it) {
      const std::string mine = fp.contains(it.key()) ? fp[it.key()].get<std::string>() : "(none)";
      if (mine != it.value().get<std::string>())
        return "rank " + std::to_string(order) + " runs a different " + it.key() + " than rank " +
               std::to_string(reference_order) + " (" + mine + " vs " +
               it.value().get<std::string>() + ")";
    }
    for (auto it = fp.begin(); it != fp.end(); ++it)
      if (!reference.contains(it.key()))
        return "rank " + std::to_string(order) + " reports " + it.key() + " and rank " +
               std::to_string(reference_order) + " does not";
    return "";
  }

  void handle_join(const httplib::Request& r, httplib::Response& res) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(r.body);
    } catch (const std::exception& e) {
      res.status = 400;
      res.set_content(std::string("malformed join: ") + e.what(), "text/plain");
      return;
    }
    const int order = j.value("order", -1);
    std::unique_lock<std::mutex> g(mu);
    if (order < 0 || order >= opt.world) {
      res.status = 409;
      res.set_content("rank " + std::to_string(order) + " is outside the world of " +
                          std::to_string(opt.world) + " ranks",
                      "text/plain");
      return;
    }
    if (reference_order < 0) {
      reference = j["fingerprint"];
      reference_order = order;
    } else if (refusal.empty()) {
      refusal = differs(j["fingerprint"], order);
    }
    // A rank joining again from the same machine replaces one that died before the group
    // formed; from another machine it is a second process claiming the same place.
    if (refusal.empty() && joined.count(order) &&
        joined[order].value("host", "") != j.value("host", ""))
      refusal = "two ranks claim rank " + std::to_string(order) + " (on " +
                joined[order].value("host", "?") + " and " + j.value("host", "?") +
                "): check --node-rank or RANK on each machine";
    // A waiting rank polls again every few seconds with the generation it waits for.
    const int64_t target = j.value("target", generation + 1);
    const bool placed_already = placed.count(order) && placed[order].generation >= target;
    if (!placed_already) {
      if (!joined.count(order)) last_join = std::chrono::steady_clock::now();
      joined[order] = j;
    }
    ++polls[order];
    seen[order] = std::chrono::steady_clock::now();
    struct Done {
      Impl* im;
      int order;
      ~Done() {
        --im->polls[order];
        im->seen[order] = std::chrono::steady_clock::now();
      }
    } done{this, order};
    if (refusal.empty() && (int)joined.size() == opt.world) form(opt.world);
    cv.notify_all();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms(r));
    auto mine = [&] { return placed.count(order) && placed[order].generation >= target; };
    while (refusal.empty() && !mine() && std::chrono::steady_clock::now() < deadline) {
      cv.wait_for(g, std::chrono::milliseconds(100));
      maybe_form_partial();
    }
    if (!refusal.empty()) {
      res.status = 409;
      res.set_content(refusal, "text/plain");
      return;
    }
    if (!mine()) {
      res.status = 408;
      nlohmann::json w = {{"target", target},
                          {"message", std::to_string(joined.size()) + " of " +
                                          std::to_string(opt.world) + " ranks joined"}};
      res.set_content(w.dump(), "application/json");
      return;
    }
    const Place& p = placed[order];
    nlohmann::json out = {{"generation", p.generation}, {"rank", p.rank}, {"world", p.world}};
    res.set_content(out.dump(), "application/json");
  }
};

RendezvousServer::RendezvousServer(const RendezvousOptions& o) : impl_(std::make_unique<Impl>()) {
  impl_->opt = o;
  Impl* im = impl_.get();
  // Long polls hold a thread each: one per rank and a few spare.
  const int threads = std::max(8, 2 * o.world + 4);
  im->svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  im->svr.set_read_timeout(600, 0);
  im->svr.set_write_timeout(600, 0);
  im->svr.set_keep_alive_timeout(600);
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, which would let a second run
  // bind the same port and split the ranks between two servers.
  im->svr.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  im->svr.Put(R"(/kv/(.+))", [im](const httplib::Request& r, httplib::Response& s) { im->handle_set(r, s); });
  im->svr.Get(R"(/kv/(.+))", [im](const httplib::Request& r, httplib::Response& s) { im->handle_get(r, s); });
  im->svr.Get("/waiting", [im](const httplib::Request& r, httplib::Response& s) { im->handle_waiting(r, s); });
  im->svr.Post("/join", [im](const httplib::Request& r, httplib::Response& s) { im->handle_join(r, s); });
  if (o.port == 0) {
    im->port = im->svr.bind_to_any_port(o.host);
    if (im->port <= 0) fail("[dist] cannot listen for the rendezvous on " + o.host);
  } else {
    if (!im->svr.bind_to_port(o.host, o.port))
      fail("[dist] cannot listen for the rendezvous on " + o.host + ":" + std::to_string(o.port) +
           ": the port is in use or the address is not this machine's (choose another with "
           "--rdzv or MASTER_PORT)");
    im->port = o.port;
  }
  im->thread = std::thread([im] {
    im->svr.listen_after_bind();
    im->loop_ended = true;
  });
  // stop() does nothing before the loop runs: a server destroyed at once would never end.
  while (!im->svr.is_running() && !im->loop_ended) std::this_thread::yield();
}

RendezvousServer::~RendezvousServer() {
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    impl_->refusal = impl_->refusal.empty() ? "the rendezvous server stopped" : impl_->refusal;
  }
  impl_->cv.notify_all();
  impl_->svr.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int RendezvousServer::port() const { return impl_->port; }

// ---------------------------------------------------------------------------------------------
struct RendezvousClient::Impl {
  std::string host;
  int port = 0;
  std::mutex mu;  // httplib::Client is not shared between threads: one per call

  std::unique_ptr<httplib::Client> client(std::chrono::milliseconds wait) {
    auto c = std::make_unique<httplib::Client>(host, port);
    c->set_connection_timeout(5, 0);
    const auto total = wait + std::chrono::seconds(10);
    c->set_read_timeout(std::chrono::duration_cast<std::chrono::seconds>(total).count(), 0);
    return c;
  }
};

RendezvousClient::RendezvousClient(const std::string& address)
    : impl_(std::make_unique<Impl>()), address_(address) {
  auto [h, p] = parse_host_port(address, "rendezvous address");
  impl_->host = h;
  impl_->port = p;
}

RendezvousClient::~RendezvousClient() = default;

namespace {
[[noreturn]] void unreachable(const std::string& address, httplib::Error e) {
  fail("[dist] cannot reach the rendezvous server at " + address + " (" + httplib::to_string(e) +
       "): is rank 0 started, and is the address right (--rdzv, MASTER_ADDR:MASTER_PORT)?");
}
}  // namespace

void RendezvousClient::set(const std::string& key, const std::vector<char>& value) {
  auto c = impl_->client(std::chrono::milliseconds(0));
  auto r = c->Put("/kv/" + key, std::string(value.begin(), value.end()), "application/octet-stream");
  if (!r) unreachable(address_, r.error());
  if (r->status != 200) fail("[dist] rendezvous server refused key '" + key + "'");
}

std::vector<char> RendezvousClient::get(const std::string& key, std::chrono::milliseconds timeout) {
  auto c = impl_->client(timeout);
  auto r = c->Get("/kv/" + key + "?timeout_ms=" + std::to_string(timeout.count()));
  if (!r) unreachable(address_, r.error());
  if (r->status == 408)
    fail("[dist] key '" + key + "' did not appear at the rendezvous within " +
         std::to_string(timeout.count()) + " ms");
  if (r->status != 200) fail("[dist] rendezvous server answered " + std::to_string(r->status));
  return std::vector<char>(r->body.begin(), r->body.end());
}

bool RendezvousClient::group_can_grow(int world) {
  auto c = impl_->client(std::chrono::milliseconds(0));
  auto r = c->Get("/waiting?world=" + std::to_string(world));
  if (!r || r->status != 200) return false;  // a server that is gone cannot grow anything
  try {
    return nlohmann::json::parse(r->body).value("grow", false);
  } catch (const std::exception&) {
    return false;
  }
}

GroupInfo RendezvousClient::join(int order, const Fingerprint& fp, std::chrono::milliseconds timeout) {
  nlohmann::json f = nlohmann::json::object();
  for (const auto& [k, v] : fp.fields) f[k] = v;
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  nlohmann::json body = {{"order", order}, {"fingerprint", f}, {"host", host}};
  // The server may not be listening yet (rank 0 starting): retry connecting within the
  // deadline. Waiting for the group is a series of short polls, so the server can tell a rank
  // that waits from one that died waiting.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  constexpr auto kPoll = std::chrono::milliseconds(2000);
  std::string last_wait;
  bool connected = false;
  httplib::Error last_error = httplib::Error::Connection;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 && !connected) unreachable(address_, last_error);
    if (left.count() <= 0)
      fail("[dist] the group did not form within " + std::to_string(timeout.count() / 1000) +
           " s: " + last_wait);
    const auto poll = std::min(left, kPoll);
    auto c = impl_->client(poll);
    auto r = c->Post("/join?timeout_ms=" + std::to_string(poll.count()), body.dump(),
                     "application/json");
    if (!r) {
      last_error = r.error();
      if (std::chrono::steady_clock::now() < deadline &&
          (r.error() == httplib::Error::Connection || r.error() == httplib::Error::ConnectionTimeout)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      unreachable(address_, r.error());
    }
    connected = true;
    if (r->status == 409) fail("[dist] refused at rendezvous: " + r->body);
    if (r->status == 408) {
      auto w = nlohmann::json::parse(r->body);
      body["target"] = w["target"];
      last_wait = w.value("message", "");
      continue;
    }
    if (r->status != 200) fail("[dist] rendezvous server answered " + std::to_string(r->status) + ": " + r->body);
    auto j = nlohmann::json::parse(r->body);
    GroupInfo g;
    g.generation = j["generation"].get<int64_t>();
    g.rank = j["rank"].get<int>();
    g.world = j["world"].get<int>();
    return g;
  }
}

}  // namespace tandem
