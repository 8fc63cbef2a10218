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
#include "tandem/serve/protocol.h"

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
      const bool chat = has_chat_format(tok);
      const int ctx = mf.config.model.context;
      // The prompts, as serving them would render them.
      std::vector<std::vector<int32_t>> prompts;
      std::vector<Sample> samples;
      std::ifstream in(a->data);
      if (!in) fail("[eval] cannot open '" + a->data + "'");
      std::string line;
      for (int no = 1; std::getline(in, line); ++no) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (a->limit > 0 && (int)samples.size() >= a->limit) break;
        const std::string where = a->data + ":" + std::to_string(no);
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const std::exception& e) {
          fail("[eval] " + where + ": not a JSON object (" + e.what() + ")");
        }
        if (!j.is_object() || !j.contains("messages") || !j["messages"].is_array() ||
            !j.contains("reference") || !j["reference"].is_string())
          fail("[eval] " + where + ": expected {\"messages\": [...], \"reference\": \"...\"}");
        nlohmann::json msgs = j["messages"];
        while (!msgs.empty() && msgs.back().value("role", "") == "assistant") msgs.erase(msgs.size() - 1);
        std::string text;
        try {
          text = serve::render_chat(msgs, chat);
        } catch (const serve::ApiError& e) {
          fail("[eval] " + where + ": " + e.what());
        }
        std::vector<int32_t> ids = {tok.bos_id()};
        for (int32_t t : chat ? tok.encode_with_specials(text) : tok.encode(text)) ids.push_back(t);
        if ((int)ids.size() + a->max_tokens > ctx)
          fail("[eval] " + where + ": the prompt is " + std::to_string(ids.size()) +
               " tokens; with --max-tokens " + std::to_string(a->max_tokens) +
               " it passes the model context of " + std::to_string(ctx));
        prompts.push_back(std::move(ids));
        samples.push_back({text, "", j["reference"].get<std::string>()});
      }
      if (samples.empty()) fail("[eval] '" + a->data + "' holds no prompts");
      auto be = make_backend(a->backend, a->threads);
      InferModel im(mf.config.model, mf.params.data(), *be, WType::F32);
      mf.params = {};
      EngineOptions eo;
      eo.slots = a->parallel;
      eo.max_step_tokens = a->parallel * ctx;
      eo.max_logit_rows = a->parallel;
      BatchEngine eng(im, eo);
      const int V = mf.config.model.vocab_size;
      const int32_t end_turn = tok.piece_id(kTurnEnd);
      // Greedy decoding of every prompt, `parallel` at a time.
      struct Slot {
        int prompt = -1;
        bool fed = false;
        std::vector<int32_t> out;
        int32_t last = 0;
      };
      std::vector<Slot> slots((size_t)a->parallel);
      size_t next = 0, done = 0;
      std::vector<std::vector<int32_t>> answers(samples.size());
      while (done < samples.size()) {
        std::vector<BatchEngine::Item> items;
        std::vector<int> who;
        for (int s = 0; s < a->parallel; ++s) {
          Slot& sl = slots[(size_t)s];
          if (sl.prompt < 0 && next < samples.size()) {
            sl = Slot{(int)next++, false, {}, 0};
            eng.reset(s);
          }
          if (sl.prompt < 0) continue;
          const auto& p = prompts[(size_t)sl.prompt];
          items.push_back(sl.fed ? BatchEngine::Item{s, &sl.last, 1, false}
                                 : BatchEngine::Item{s, p.data(), (int)p.size(), false});
          sl.fed = true;
          who.push_back(s);
        }
        const float* lg = eng.step(items);
        for (size_t k = 0; k < who.size(); ++k) {
          Slot& sl = slots[(size_t)who[k]];
          const float* row = lg + k * (size_t)V;
          const int32_t tok_id = (int32_t)(std::max_element(row, row + V) - row);
          const bool end = tok_id == tok.eos_id() || tok_id == end_turn;
          if (!end) sl.out.push_back(tok_id), sl.last = tok_id;
          if (end || (int)sl.out.size() >= a->max_tokens) {
            answers[(size_t)sl.prompt] = sl.out;
            sl.prompt = -1;
            ++done;
          }
        }
      }
      for (size_t i = 0; i < samples.size(); ++i) samples[i].completion = tok.decode(answers[i]);
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
