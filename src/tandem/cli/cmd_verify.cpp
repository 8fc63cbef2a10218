// tandem verify --checkpoint DIR --reference cpu --candidate BACKEND[:QUANT]: does the model
// behave the same on the candidate? Exit 0 within thresholds, 2 outside, 1 on an error.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/cli/commands.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/infer/parity.h"
#include "tandem/infer/quant.h"

namespace tandem::cli {

namespace {

struct Target {
  std::string backend;
  WType quant = WType::F32;
};

Target parse_target(const std::string& s) {
  Target t;
  const auto colon = s.find(':');
  t.backend = s.substr(0, colon);
  if (colon != std::string::npos) t.quant = parse_quant(s.substr(colon + 1));
  if (t.backend.empty()) fail("[verify] '" + s + "' names no backend (expected BACKEND[:QUANT])");
  return t;
}

// Defaults per candidate weight type (docs/serving.md): same dtype must agree to rounding;
// quantized candidates are held to their expected quality loss.
struct Thresholds {
  double max_kld, min_top1, max_ppl_ratio;
};
Thresholds defaults_for(WType t) {
  switch (t) {
    case WType::Q8: return {5e-3, 0.97, 1.01};
    case WType::Q4: return {5e-2, 0.85, 1.05};
    default: return {1e-5, 0.999, 1.001};
  }
}

}  // namespace

void add_verify(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("verify", "check that a candidate backend/quantization matches the reference");
  struct Args {
    std::string checkpoint, reference = "cpu", candidate, data, prompts_file;
    int threads = 0, greedy_tokens = 128;
    int64_t val_tokens = 16384;
    double max_kld = -1, min_top1 = -1, max_ppl_ratio = -1;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint,-c", a->checkpoint, "checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--reference", a->reference, "BACKEND[:QUANT] taken as the truth")->capture_default_str();
  cmd->add_option("--candidate", a->candidate, "BACKEND[:QUANT] under test, e.g. cpu:int8")->required();
  cmd->add_option("--data", a->data, "dataset directory holding val.bin (default: the run's data.dir)");
  cmd->add_option("--val-tokens", a->val_tokens, "validation tokens scored (0 = skip)")->capture_default_str();
  cmd->add_option("--greedy-tokens", a->greedy_tokens, "tokens generated per prompt")->capture_default_str();
  cmd->add_option("--prompts", a->prompts_file, "file with one prompt per line (default: a built-in set)");
  cmd->add_option("--max-kld", a->max_kld, "largest mean KL divergence accepted");
  cmd->add_option("--min-top1", a->min_top1, "smallest same-top-token rate accepted");
  cmd->add_option("--max-ppl-ratio", a->max_ppl_ratio, "largest candidate/reference perplexity ratio accepted");
  cmd->add_option("--threads", a->threads, "threads (0 = all cores)");
  cmd->add_flag("--json", a->json, "print the report as JSON");
  cmd->callback([&action, a] {
    action = [a] {
      const Target ref = parse_target(a->reference), cand = parse_target(a->candidate);
      if (a->val_tokens < 0) fail("[verify] --val-tokens must not be negative");
      if (a->greedy_tokens < 1) fail("[verify] --greedy-tokens must be at least 1");
      ParityOptions po;
      po.greedy_tokens = a->greedy_tokens;
      po.val_tokens = a->val_tokens;
      if (!a->prompts_file.empty()) {
        std::ifstream in(a->prompts_file);
        if (!in) fail("[verify] cannot read prompts file '" + a->prompts_file + "'");
        for (std::string line; std::getline(in, line);)
          if (!line.empty()) po.prompts.push_back(line);
        if (po.prompts.empty()) fail("[verify] '" + a->prompts_file + "' holds no prompt");
      }
      ModelFiles mf = load_model_files(a->checkpoint);
      std::unique_ptr<ShardReader> val;
      if (a->val_tokens > 0) {
        const std::string dir = a->data.empty() ? mf.config.data_dir : a->data;
        const std::string path = dir + "/val.bin";
        if (!path_exists(path))
          fail("[verify] no validation shard at '" + path +
               "'; pass --data DIR, or --val-tokens 0 to skip perplexity");
        val = std::make_unique<ShardReader>(path);
        if ((int)val->vocab_size() != mf.config.model.vocab_size)
          fail("[verify] " + path + " has a vocabulary of " + std::to_string(val->vocab_size()) +
               ", the model " + std::to_string(mf.config.model.vocab_size));
      }
      auto be_ref = make_backend(ref.backend, a->threads);
      auto be_cand = make_backend(cand.backend, a->threads);
      InferModel mref(mf.config.model, mf.params.data(), *be_ref, ref.quant);
      InferModel mcand(mf.config.model, mf.params.data(), *be_cand, cand.quant);
      const ParityReport r = run_parity(mref, mcand, *mf.tokenizer, val.get(), po);
      Thresholds th = defaults_for(cand.quant == WType::F32 ? ref.quant : cand.quant);
      if (a->max_kld >= 0) th.max_kld = a->max_kld;
      if (a->min_top1 >= 0) th.min_top1 = a->min_top1;
      if (a->max_ppl_ratio >= 0) th.max_ppl_ratio = a->max_ppl_ratio;
      std::vector<std::string> failures;
      char buf[200];
      if (r.mean_kld > th.max_kld) {
        std::snprintf(buf, sizeof buf, "mean KL divergence %.3g > %.3g", r.mean_kld, th.max_kld);
        failures.push_back(buf);
      }
      if (r.top1_agreement < th.min_top1) {
        std::snprintf(buf, sizeof buf, "top-token agreement %.4f < %.4f", r.top1_agreement, th.min_top1);
        failures.push_back(buf);
      }
      if (r.val_positions > 0 && r.ppl_ratio > th.max_ppl_ratio) {
        std::snprintf(buf, sizeof buf, "perplexity ratio %.4f > %.4f", r.ppl_ratio, th.max_ppl_ratio);
        failures.push_back(buf);
      }
      const std::string verdict = failures.empty() ? "PASS" : "FAIL";
      if (a->json) {
        nlohmann::json j = {{"checkpoint", mf.dir}, {"step", mf.step}, {"reference", a->reference},
                            {"candidate", a->candidate}, {"positions", r.positions},
                            {"mean_kld", r.mean_kld}, {"max_kld", r.max_kld},
                            {"top1_agreement", r.top1_agreement}, {"prompts", r.prompts},
                            {"greedy_agreement", r.greedy_agreement},
                            {"greedy_identical", r.greedy_identical},
                            {"val_positions", r.val_positions}, {"ppl_reference", r.ppl_reference},
                            {"ppl_candidate", r.ppl_candidate}, {"ppl_ratio", r.ppl_ratio},
                            {"thresholds", {{"max_kld", th.max_kld}, {"min_top1", th.min_top1},
                                            {"max_ppl_ratio", th.max_ppl_ratio}}},
                            {"verdict", verdict}, {"failures", failures}};
        std::printf("%s\n", j.dump(2).c_str());
      } else {
        std::printf("verify %s (step %lld): reference %s, candidate %s\n", mf.dir.c_str(),
                    (long long)mf.step, a->reference.c_str(), a->candidate.c_str());
        std::printf("  positions compared     %lld (%d prompts + %lld validation)\n",
                    (long long)r.positions, r.prompts, (long long)r.val_positions);
        std::printf("  KL divergence          mean %.3g, max %.3g   (limit: mean <= %.3g)\n",
                    r.mean_kld, r.max_kld, th.max_kld);
        std::printf("  same top token         %.4f                  (limit: >= %.4f)\n",
                    r.top1_agreement, th.min_top1);
        std::printf("  greedy agreement       %.4f of %d tokens; %d/%d prompts identical\n",
                    r.greedy_agreement, a->greedy_tokens, r.greedy_identical, r.prompts);
        if (r.val_positions > 0)
          std::printf("  perplexity             %.4f vs %.4f, ratio %.5f (limit: <= %.4f)\n",
                      r.ppl_candidate, r.ppl_reference, r.ppl_ratio, th.max_ppl_ratio);
        std::printf("%s%s\n", verdict.c_str(), failures.empty() ? "" : ":");
        for (const auto& f : failures) std::printf("  %s\n", f.c_str());
      }
      std::fflush(stdout);
      if (!failures.empty()) std::exit(2);
    };
  });
}

}  // namespace tandem::cli
