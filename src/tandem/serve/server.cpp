// Server: routes, authentication, error shapes, streaming and metrics on cpp-httplib. A
// request that waits keeps writing (SSE comments, or JSON's insignificant leading spaces) so
// that a vanished client is noticed and its sequences are cancelled.
#include "tandem/serve/server.h"

#include <httplib.h>

#include <chrono>
#include <map>
#include <mutex>
#include <sstream>

#include "tandem/core/error.h"

namespace tandem::serve {

using nlohmann::json;
using namespace std::chrono_literals;

struct Server::Impl {
  Scheduler& sched;
  const Tokenizer& tok;
  Limits limits;
  int context;
  ServerOptions opt;
  socket_t listen_sock = INVALID_SOCKET;  // the listening socket, once bound
  httplib::Server svr;
  int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  std::mutex mu;
  std::map<std::pair<std::string, int>, int64_t> requests;  // (path, status) -> count

  Impl(Scheduler& s, const Tokenizer& t, const Limits& l, int ctx, const ServerOptions& o)
      : sched(s), tok(t), limits(l), context(ctx), opt(o) {}

  static void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(error_body(e), "application/json");
  }

  std::vector<std::vector<int32_t>> tokenize(const GenRequest& r) {
    const int max_prompt = opt.max_prompt_tokens > 0 ? opt.max_prompt_tokens : context - 1;
    std::vector<std::vector<int32_t>> out;
    for (const Prompt& p : r.prompts) {
      std::vector<int32_t> ids;
      if (p.is_ids) {
        if (p.ids.front() != tok.bos_id()) ids.push_back(tok.bos_id());
        ids.insert(ids.end(), p.ids.begin(), p.ids.end());
      } else {
        ids.push_back(tok.bos_id());
        for (int32_t t : p.special ? tok.encode_with_specials(p.text) : tok.encode(p.text))
          ids.push_back(t);
      }
      const std::string param = r.endpoint == Endpoint::Chat ? "messages" : "prompt";
      if ((int)ids.size() > max_prompt)
        throw bad_request("the prompt is " + std::to_string(ids.size()) +
                              " tokens; this server accepts at most " + std::to_string(max_prompt),
                          param);
      if (r.max_tokens > 0 && (int)ids.size() + r.max_tokens > context)
        throw bad_request("this model's maximum context length is " + std::to_string(context) +
                              " tokens, but " + std::to_string(ids.size() + r.max_tokens) +
                              " were requested (" + std::to_string(ids.size()) +
                              " in the prompt, " + std::to_string(r.max_tokens) +
                              " for the completion); reduce the prompt or max_tokens",
                          "max_tokens");
      out.push_back(std::move(ids));
    }
    return out;
  }

  void generate(Endpoint ep, const httplib::Request& req, httplib::Response& res) {
    std::shared_ptr<Job> job;
    try {
      GenRequest r = parse_request(ep, req.body, limits);
      auto prompts = tokenize(r);
      job = std::make_shared<Job>(std::move(r), std::move(prompts));
    } catch (const ApiError& e) {
      return send_error(res, e);
    }
    if (!sched.submit(job))
      return send_error(res, ApiError(429, "rate_limit_exceeded",
                                      "the server is busy: the request queue is full; retry later",
                                      "", "queue_full"));
    const std::string id = new_id(ep);
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    auto on_release = [job](bool ok) {
      if (!ok) job->cancel();
    };
    if (job->request().stream) {
      res.set_header("Cache-Control", "no-cache");
      auto first = std::make_shared<std::vector<bool>>(job->num_choices(), true);
      res.set_chunked_content_provider(
          "text/event-stream",
          [job, id, now, first, sched = &sched,
           interval = opt.stream_interval_ms](size_t, httplib::DataSink& sink) {
            auto send = [&](const std::string& s) {
              if (sink.write(s.data(), s.size())) return true;
              job->cancel();
              return false;
            };
            auto event = [&](const json& j) { return send("data: " + dump(j) + "\n\n"); };
            const GenRequest& r = job->request();
            while (true) {
              std::vector<Job::Update> ups;
              // Automatic interval: a sequence alone gets every token at once; while several
              // share the steps, each stream's tokens go out in batches, so waking the
              // streams' threads and writing their events costs the steps less per token.
              const double ms = interval >= 0            ? interval
                                : sched->running() > 1 ? kAutoStreamIntervalMs
                                                       : 0.0;
              const bool done =
                  job->wait(ups, 500ms, std::chrono::microseconds((int64_t)(ms * 1000)));
              if (!job->error().empty()) {
                ApiError e(500, "server_error", job->error());
                send("data: " + error_body(e) + "\n\n");
                sink.done();
                return true;
              }
              if (ups.empty() && !done && !send(": keep-alive\n\n")) return false;
              for (const auto& u : ups) {
                const bool f = (*first)[u.choice];
                if (!u.delta.empty() || f || (!u.logprobs.empty()))
                  if (!event(chunk_json(r, id, now, u.choice, u.delta, u.logprobs, "", f)))
                    return false;
                (*first)[u.choice] = false;
                if (!u.finish_reason.empty() &&
                    !event(chunk_json(r, id, now, u.choice, "", {}, u.finish_reason, false)))
                  return false;
              }
              if (done) {
                if (r.include_usage &&
                    !event(usage_chunk_json(
                        r, id, now, Usage{job->prompt_tokens(), job->completion_tokens()})))
                  return false;
                if (!send("data: [DONE]\n\n")) return false;
                sink.done();
                return true;
              }
            }
          },
          on_release);
      return;
    }
    res.set_chunked_content_provider(
        "application/json",
        [job, id, now](size_t, httplib::DataSink& sink) {
          const GenRequest& r = job->request();
          std::vector<ChoiceResult> choices(job->num_choices());
          for (int i = 0; i < (int)choices.size(); ++i) choices[i].index = i;
          auto waited = std::chrono::steady_clock::now();
          while (true) {
            std::vector<Job::Update> ups;
            // Only the end matters here: tokens do not wake this thread (a second's gap).
            const bool done = job->wait(ups, 250ms, 1s);
            for (auto& u : ups) {
              ChoiceResult& c = choices[u.choice];
              c.text += u.delta;
              for (auto& lp : u.logprobs) c.logprobs.push_back(std::move(lp));
              if (!u.finish_reason.empty()) c.finish_reason = u.finish_reason;
            }
            std::string body;
            if (!job->error().empty()) {
              body = error_body(ApiError(500, "server_error", job->error()));
            } else if (done) {
              json out = response_json(r, id, now, choices,
                                       Usage{job->prompt_tokens(), job->completion_tokens()});
              if (r.return_token_ids) out["prompt_token_ids"] = job->prompts();
              body = dump(out);
            } else if (std::chrono::steady_clock::now() - waited > 1s) {
              // Leading whitespace is insignificant in JSON; writing it finds gone clients.
              waited = std::chrono::steady_clock::now();
              if (!sink.write(" ", 1)) {
                job->cancel();
                return false;
              }
            }
            if (!body.empty()) {
              if (!sink.write(body.data(), body.size())) return false;
              sink.done();
              return true;
            }
          }
        },
        on_release);
  }

  std::string metrics() {
    const SchedulerStats st = sched.stats();
    std::ostringstream o;
    o << "# HELP tandem_requests_total HTTP requests by path and status code.\n"
         "# TYPE tandem_requests_total counter\n";
    {
      std::lock_guard lk(mu);
      for (const auto& [k, v] : requests)
        o << "tandem_requests_total{path=\"" << k.first << "\",code=\"" << k.second << "\"} " << v
          << "\n";
    }
    auto metric = [&](const char* name, const char* type, const char* help, double v) {
      o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
        << name << " " << v << "\n";
    };
    metric("tandem_prompt_tokens_total", "counter", "Prompt tokens processed.",
           (double)st.prompt_tokens);
    metric("tandem_generated_tokens_total", "counter", "Tokens generated.",
           (double)st.completion_tokens);
    metric("tandem_queue_depth", "gauge", "Sequences waiting for a KV slot.", (double)st.queued);
    metric("tandem_active_sequences", "gauge", "Sequences being generated.", (double)st.active);
    metric("tandem_slots", "gauge", "KV cache slots (the most sequences decoded together).",
           (double)sched.slots());
    metric("tandem_engine_steps_total", "counter", "Batched forward steps.", (double)st.steps);
    metric("tandem_engine_step_tokens_total", "counter",
           "Tokens through the batched forward, summed over steps (over steps: the mean batch).",
           (double)st.step_tokens);
    metric("tandem_engine_forward_seconds_total", "counter", "Time spent in batched forwards.",
           st.forward_seconds);
    metric("tandem_engine_step_seconds_total", "counter",
           "Time spent in steps: the forward, sampling, stop rules and publishing the tokens.",
           st.step_seconds);
    metric("tandem_cancelled_sequences_total", "counter",
           "Sequences cancelled because their client went away.", (double)st.cancelled);
    metric("tandem_tokens_per_second", "gauge", "Generated tokens per second over the last 10 s.",
           st.tokens_per_second);
    o << "# HELP tandem_time_to_first_token_seconds Time from arrival to the first generated "
         "token.\n# TYPE tandem_time_to_first_token_seconds histogram\n";
    for (size_t b = 0; b < kTtftBuckets.size(); ++b)
      o << "tandem_time_to_first_token_seconds_bucket{le=\"" << kTtftBuckets[b] << "\"} "
        << st.ttft_buckets[b] << "\n";
    o << "tandem_time_to_first_token_seconds_bucket{le=\"+Inf\"} " << st.ttft_count << "\n"
      << "tandem_time_to_first_token_seconds_sum " << st.ttft_sum << "\n"
      << "tandem_time_to_first_token_seconds_count " << st.ttft_count << "\n";
    return o.str();
  }

  void routes() {
    const int threads = opt.http_threads > 0 ? opt.http_threads : sched.slots() + 64 + 8;
    svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, which would let a second
    // server share a port that is already in use instead of failing.
    svr.set_socket_options([this](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_sock = sock;
    });
    // Connections stay open across many requests (cpp-httplib closes one after 5 by default,
    // so busy clients would reconnect all the time).
    svr.set_keep_alive_max_count(100000);
    svr.set_payload_max_length(opt.max_body_bytes);
    svr.set_read_timeout(opt.read_timeout_s, 0);
    svr.set_write_timeout(opt.write_timeout_s, 0);
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (opt.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      const std::string want = "Bearer " + opt.api_key;
      if (req.get_header_value("Authorization") != want) {
        send_error(res, ApiError(401, "invalid_request_error",
                                 "a valid API key is required: send 'Authorization: Bearer KEY'",
                                 "", "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string msg;
      switch (res.status) {
        case 404: msg = "no route for " + req.method + " " + req.path; break;
        case 413: msg = "the request body is too large"; break;
        case 400: msg = "the request could not be read"; break;
        default: msg = "HTTP error " + std::to_string(res.status);
      }
      res.set_content(error_body(ApiError(res.status, "invalid_request_error", msg)),
                      "application/json");
    });
    svr.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "internal error";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          send_error(res, ApiError(500, "server_error", what));
        });
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      static const char* known[] = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                    "/health", "/metrics"};
      std::string path = "other";
      for (const char* k : known)
        if (req.path == k) path = k;
      std::lock_guard lk(mu);
      ++requests[{path, res.status}];
    });
    svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("{\"status\":\"ok\"}", "application/json");
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics(), "text/plain; version=0.0.4");
    });
    auto model_json = [this] {
      return json{{"id", limits.model_id}, {"object", "model"}, {"created", created},
                  {"owned_by", "tandem"}};
    };
    svr.Get("/v1/models", [model_json](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump(json{{"object", "list"}, {"data", json::array({model_json()})}}),
                      "application/json");
    });
    svr.Get(R"(/v1/models/(.+))", [this, model_json](const httplib::Request& req,
                                                      httplib::Response& res) {
      if (req.matches[1] != limits.model_id)
        return send_error(res, ApiError(404, "invalid_request_error",
                                        "the model '" + std::string(req.matches[1]) +
                                            "' does not exist",
                                        "model", "model_not_found"));
      res.set_content(dump(model_json()), "application/json");
    });
    svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      generate(Endpoint::Completions, req, res);
    });
    svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      generate(Endpoint::Chat, req, res);
    });
  }
};

Server::Server(Scheduler& sched, const Tokenizer& tok, const Limits& limits, int context,
               const ServerOptions& opt)
    : impl_(std::make_unique<Impl>(sched, tok, limits, context, opt)) {
  impl_->routes();
}

Server::~Server() = default;

void Server::run(const std::function<void(int)>& on_ready) {
  auto& o = impl_->opt;
  int port = o.port;
  if (port == 0) {
    port = impl_->svr.bind_to_any_port(o.host);
    if (port < 0) fail("[serve] cannot bind " + o.host);
  } else if (!impl_->svr.bind_to_port(o.host, port)) {
    fail("[serve] cannot bind " + o.host + ":" + std::to_string(port) +
         " (in use, or not an address of this machine)");
  }
  // cpp-httplib listens with a backlog of 5: a burst of connections overflows it and the
  // dropped SYNs are retried only after a second. Listening again resizes the queue.
  if (impl_->listen_sock != INVALID_SOCKET) ::listen(impl_->listen_sock, SOMAXCONN);
  on_ready(port);
  impl_->svr.listen_after_bind();
}

void Server::stop() { impl_->svr.stop(); }

}  // namespace tandem::serve
