// tandem train CONFIG.toml [--resume]: run (or continue) a training job.
#include <cstdio>
#include <string>

#include "tandem/cli/commands.h"
#include "tandem/train/trainer.h"

namespace tandem::cli {

void add_train(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("train", "train a model from a TOML config");
  struct Args {
    std::string config, out_dir, data_dir;
    bool resume = false;
    int64_t steps = -1, stop_after = -1;
    int threads = -1;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("config", a->config, "run config (TOML)")->required();
  cmd->add_flag("--resume", a->resume, "continue from the newest checkpoint that verifies");
  cmd->add_option("--out-dir", a->out_dir, "override run.out_dir");
  cmd->add_option("--data-dir", a->data_dir, "override data.dir");
  cmd->add_option("--max-steps", a->steps, "override train.max_steps");
  cmd->add_option("--stop-after", a->stop_after, "stop (with a checkpoint) after this step");
  cmd->add_option("--threads", a->threads, "override train.threads");
  cmd->callback([&action, a] {
    action = [a] {
      RunConfig cfg = load_run_config(a->config);
      if (!a->out_dir.empty()) cfg.out_dir = a->out_dir;
      if (!a->data_dir.empty()) cfg.data_dir = a->data_dir;
      if (a->steps > 0) cfg.train.max_steps = a->steps;
      if (a->threads >= 0) cfg.train.threads = a->threads;
      TrainOptions opts;
      opts.resume = a->resume;
      opts.stop_after = a->stop_after;
      TrainResult r = run_training(cfg, opts);
      char val[48] = "";
      if (r.last_val_loss >= 0) std::snprintf(val, sizeof val, ", val loss %.4f", r.last_val_loss);
      std::fprintf(stderr, "[train] done: step %lld, loss %.4f%s, %.0f tok/s\n", (long long)r.step,
                   r.last_loss, val, r.tokens_per_s);
      std::fprintf(stderr, "[train] checkpoint: %s\n", r.last_checkpoint.c_str());
    };
  });
}

}  // namespace tandem::cli
