// tandem serve --checkpoint DIR: an OpenAI-compatible HTTP server with continuous batching.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "tandem/cli/commands.h"
#include "tandem/core/error.h"
#include "tandem/data/chat.h"
#include "tandem/infer/engine.h"
#include "tandem/infer/quant.h"
#include "tandem/serve/server.h"

namespace tandem::cli {


void add_serve(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("serve", "serve a checkpoint over an OpenAI-compatible HTTP API");
  struct Args {
    std::string checkpoint, backend = "cpu", quant = "none", model_name, api_key;
    std::string stream_interval = "auto";
    serve::ServerOptions so;
    int threads = 0, parallel = 16, queue = 64, max_step_tokens = 0, max_tokens = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint,-c", a->checkpoint, "checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--host", a->so.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", a->so.port, "port (0 = any free port)")->capture_default_str();
  cmd->add_option("--api-key", a->api_key, "require 'Authorization: Bearer KEY' (default: $TANDEM_API_KEY)");
  cmd->add_option("--quant", a->quant, "weights: none (fp32), int8 or q4")->capture_default_str();
  cmd->add_option("--backend", a->backend, "backend to run on")->capture_default_str();
  cmd->add_option("--threads", a->threads, "compute threads (0 = all cores)");
  cmd->add_option("--parallel", a->parallel, "sequences decoded together (KV cache slots)")->capture_default_str();
  cmd->add_option("--queue", a->queue, "sequences that may wait for a slot before requests get 429")->capture_default_str();
  cmd->add_option("--max-step-tokens", a->max_step_tokens, "tokens per batched step, prompt chunks included (0 = 2 x context)");
  cmd->add_option("--max-tokens", a->max_tokens, "largest max_tokens a request may ask for (0 = the context)");
  cmd->add_option("--max-prompt-tokens", a->so.max_prompt_tokens, "longest prompt accepted (0 = context - 1)");
  cmd->add_option("--max-body-bytes", a->so.max_body_bytes, "largest request body")->capture_default_str();
  cmd->add_option("--stream-interval-ms", a->stream_interval, "streams send accumulated tokens at most this often: a number of ms (0 = every token), or auto (every token while one sequence runs, 10 ms while several do)")->capture_default_str();
  cmd->add_option("--model-name", a->model_name, "model id clients use (default: the run's directory name)");
  cmd->callback([&action, a] {
    action = [a] {
      if (a->parallel < 1 || a->parallel > 256) fail("[serve] --parallel must be between 1 and 256");
      if (a->queue < 0) fail("[serve] --queue must not be negative");
      if (a->stream_interval == "auto") {
        a->so.stream_interval_ms = -1;
      } else {
        char* end = nullptr;
        const double ms = std::strtod(a->stream_interval.c_str(), &end);
        if (a->stream_interval.empty() || *end != '\0' || !(ms >= 0 && ms <= 1000))
          fail("[serve] --stream-interval-ms must be auto or a number between 0 and 1000, not '" +
               a->stream_interval + "'");
        a->so.stream_interval_ms = ms;
      }
      if (a->so.port < 0 || a->so.port > 65535) fail("[serve] --port must be between 0 and 65535");
      if (a->api_key.empty())
        if (const char* k = std::getenv("TANDEM_API_KEY")) a->api_key = k;
      a->so.api_key = a->api_key;
      const WType wt = parse_quant(a->quant);
      ModelFiles mf = load_model_files(a->checkpoint);
      const ModelConfig& mc = mf.config.model;
      auto be = make_backend(a->backend, a->threads);
      InferModel im(mc, mf.params.data(), *be, wt);
      mf.params = {};
      EngineOptions eo;
      eo.slots = a->parallel;
      eo.max_seq = mc.context;
      eo.max_step_tokens = a->max_step_tokens > 0 ? a->max_step_tokens : 2 * mc.context;
      eo.max_logit_rows = a->parallel;
      if (eo.max_step_tokens < a->parallel) eo.max_step_tokens = a->parallel;
      BatchEngine engine(im, eo);
      serve::Limits lim;
      lim.model_id = a->model_name.empty() ? run_name(mf) : a->model_name;
      lim.vocab_size = mc.vocab_size;
      lim.max_tokens = a->max_tokens > 0 ? std::min(a->max_tokens, mc.context) : mc.context;
      lim.max_n = std::min(16, a->parallel + a->queue);
      lim.max_prompts = lim.max_n;
      lim.chat_format = has_chat_format(*mf.tokenizer);
      // Signals go to one thread that stops the server; the others never see them.
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGINT);
      sigaddset(&set, SIGTERM);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
      signal(SIGPIPE, SIG_IGN);
      serve::SchedulerOptions so{a->queue, a->threads, ""};
      if (const char* hold = std::getenv("TANDEM_SERVE_HOLD_FILE")) so.hold_file = hold;
      serve::Scheduler sched(engine, *mf.tokenizer, so);
      serve::Server server(sched, *mf.tokenizer, lim, mc.context, a->so);
      std::thread waiter([&server, set] {
        int sig = 0;
        sigwait(&set, &sig);
        server.stop();
      });
      auto stop_waiter = [&] {
        pthread_kill(waiter.native_handle(), SIGTERM);
        waiter.join();
      };
      try {
        server.run([&](int port) {
        std::fprintf(stderr,
                     "[serve] listening on http://%s:%d  model '%s' (step %lld, %s weights, %s), "
                     "%d slots\n",
                     a->so.host.c_str(), port, lim.model_id.c_str(), (long long)mf.step,
                     quant_name(wt), a->backend.c_str(), eo.slots);
        std::fflush(stderr);
        });
      } catch (...) {
        stop_waiter();
        throw;
      }
      stop_waiter();
      std::fprintf(stderr, "[serve] stopped\n");
    };
  });
}

}  // namespace tandem::cli
