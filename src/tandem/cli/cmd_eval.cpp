// tandem eval --checkpoint DIR --data FILE.jsonl [--verifier KIND]: greedy answers to held-out
// prompts, scored by a verifier (exact-match accuracy on a task with a checker).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/backend/backend.h"
#include "tandem/cli/commands.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/data/chat.h"
#include "tandem/infer/engine.h"
#include "tandem/rl/verifier.h"
#include "tandem/rl/prompts.h"
#include "tandem/rl/rollout.h"

namespace tandem::cli {

void add_eval(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("eval", "answer held-out prompts greedily and score them with a verifier");
  struct Args {
    std::string checkpoint, data, out, backend = "cpu";
    VerifierSpec v;
    int max_tokens = 32, parallel = 16, threads = 0, limit = 0;
  };
  auto a = std::make_shared<Args>();
  a->v.kind = "exact_match";
  cmd->add_option("--checkpoint,-c", a->checkpoint, "checkpoint, or a run directory")->required();
  cmd->add_option("--data,-d", a->data, "JSONL of {\"messages\": [...], \"reference\": ...}; a "
                  "final assistant turn (the label) is dropped")->required();
  cmd->add_option("--verifier", a->v.kind, "exact_match, regex, countdown or command")
      ->capture_default_str();
  cmd->add_option("--pattern", a->v.pattern, "regex: the pattern");
  cmd->add_option("--command", a->v.command, "command: run with /bin/sh -c");
  cmd->add_option("--max-tokens,-n", a->max_tokens, "tokens per answer")->capture_default_str();
  cmd->add_option("--parallel", a->parallel, "answers generated together")->capture_default_str();
  cmd->add_option("--limit", a->limit, "score only the first N prompts (0: all)");
  cmd->add_option("--threads", a->threads, "threads (0 = all cores)");
  cmd->add_option("--json", a->out, "write the answers and rewards here");
  cmd->callback([&action, a] {
    action = [a] {
      if (a->max_tokens < 1 || a->parallel < 1) fail("[eval] --max-tokens and --parallel must be positive");
      auto verifier = make_verifier(a->v);  // a bad spec fails before the model loads
      ModelFiles mf = load_model_files(a->checkpoint);
      const Tokenizer& tok = *mf.tokenizer;
      // The prompts, as GRPO's rollouts and serving render them.
      const std::vector<Prompt> prompts = load_prompts(a->data, tok, mf.config.model.context,
                                                       a->max_tokens, "eval", a->limit);
      auto be = make_backend(a->backend, a->threads);
      InferModel im(mf.config.model, mf.params.data(), *be, WType::F32);
      mf.params = {};
      GenerateOptions go;
      go.max_new = a->max_tokens;
      go.slots = a->parallel;
      go.sampling.temperature = 0;  // greedy
      go.stops = {tok.eos_id()};
      if (has_chat_format(tok)) go.stops.push_back(tok.piece_id(kTurnEnd));
      std::vector<const std::vector<int32_t>*> reqs;
      for (const Prompt& p : prompts) reqs.push_back(&p.tokens);
      std::vector<Completion> answers =
          generate(im, reqs, std::vector<uint64_t>(reqs.size(), 0), go, nullptr);
      std::vector<Sample> samples;
      for (size_t i = 0; i < prompts.size(); ++i) {
        if (answers[i].finished) answers[i].tokens.pop_back();  // the stop token
        samples.push_back({prompts[i].text, tok.decode(answers[i].tokens), prompts[i].reference});
      }
      const std::vector<double> rewards = verifier->score(samples);
      double sum = 0;
      for (double r : rewards) sum += r;
      const double acc = sum / (double)rewards.size();
      std::printf("%s: %.1f / %zu = %.1f%%\n", verifier->name().c_str(), sum, rewards.size(),
                  100 * acc);
      if (!a->out.empty()) {
        nlohmann::json j = {{"checkpoint", mf.dir}, {"verifier", verifier->name()},
                            {"accuracy", acc}, {"n", rewards.size()}};
        nlohmann::json items = nlohmann::json::array();
        for (size_t i = 0; i < samples.size(); ++i)
          items.push_back({{"prompt", samples[i].prompt}, {"completion", samples[i].completion},
                           {"reference", samples[i].reference}, {"reward", rewards[i]}});
        j["items"] = items;
        atomic_write_file(a->out, j.dump(1) + "\n");
      }
    };
  });
}

}  // namespace tandem::cli
