// tandem generate --checkpoint DIR --prompt TEXT: stream a continuation to stdout.
#include <chrono>
#include <cstdio>
#include <span>

#include "tandem/cli/commands.h"
#include "tandem/core/error.h"
#include "tandem/infer/engine.h"
#include "tandem/infer/quant.h"
#include "tandem/infer/sampler.h"

namespace tandem::cli {

void add_generate(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("generate", "sample text from a checkpoint");
  struct Args {
    std::string checkpoint, prompt, backend = "cpu", quant = "none";
    int max_tokens = 128, threads = 0;
    SamplingParams sp;
    bool greedy = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint,-c", a->checkpoint, "checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--prompt,-p", a->prompt, "prompt text")->required();
  cmd->add_option("--max-tokens,-n", a->max_tokens, "tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", a->sp.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-k", a->sp.top_k, "keep the k most likely tokens (0 = all)")
      ->capture_default_str();
  cmd->add_option("--top-p", a->sp.top_p, "nucleus probability mass")->capture_default_str();
  cmd->add_option("--seed", a->sp.seed, "sampling seed")->capture_default_str();
  cmd->add_flag("--greedy", a->greedy, "always take the most likely token");
  cmd->add_option("--backend", a->backend, "backend to run on")->capture_default_str();
  cmd->add_option("--threads", a->threads, "threads (0 = all cores)");
  cmd->add_option("--quant", a->quant, "weights: none (fp32), int8 or q4")->capture_default_str();
  cmd->callback([&action, a] {
    action = [a] {
      if (a->greedy) a->sp.temperature = 0.f;
      if (a->max_tokens < 0) fail("[generate] --max-tokens must not be negative");
      if (a->sp.temperature < 0) fail("[generate] --temperature must not be negative");
      if (a->sp.top_p <= 0 || a->sp.top_p > 1) fail("[generate] --top-p must be in (0, 1]");
      const WType wt = parse_quant(a->quant);
      ModelFiles mf = load_model_files(a->checkpoint);
      auto be = make_backend(a->backend, a->threads);
      InferModel im(mf.config.model, mf.params.data(), *be, wt);
      mf.params = {};
      const Tokenizer& tok = *mf.tokenizer;
      std::vector<int32_t> ids = {tok.bos_id()};
      for (int32_t t : tok.encode(a->prompt)) ids.push_back(t);
      const int ctx = mf.config.model.context;
      if ((int)ids.size() > ctx)
        fail("[generate] prompt is " + std::to_string(ids.size()) +
             " tokens, longer than the model context of " + std::to_string(ctx));
      BatchEngine eng(im, EngineOptions{});
      const int V = mf.config.model.vocab_size;
      std::vector<float> logits(V);
      auto feed = [&](const int32_t* t, int n) {
        BatchEngine::Item it{0, t, n, false};
        const float* lg = eng.step({&it, 1});
        logits.assign(lg, lg + V);
      };
      std::fputs(a->prompt.c_str(), stdout);
      std::fflush(stdout);
      auto t0 = std::chrono::steady_clock::now();
      feed(ids.data(), (int)ids.size());
      int produced = 0;
      while (produced < a->max_tokens) {
        int32_t next = sample_token(logits, a->sp, ids.size());
        if (next == tok.eos_id()) break;
        ids.push_back(next);
        ++produced;
        std::fputs(tok.decode_piece(std::span<const int32_t>(ids)).c_str(), stdout);
        std::fflush(stdout);
        if (eng.position(0) >= ctx) break;
        feed(&next, 1);
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("\n");
      std::fflush(stdout);
      std::fprintf(stderr, "[generate] %d tokens in %.2f s (%.1f tok/s)\n", produced, s,
                   produced / s);
    };
  });
}

}  // namespace tandem::cli
