// tandem train CONFIG.toml [--resume]: run (or continue) a training job under the supervisor.
// tandem sft CONFIG.toml: the same for a config with an [sft] table (fine-tuning a checkpoint
// on labelled examples); tandem grpo CONFIG.toml: with a [grpo] table (RL from a checkpoint).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tandem/cli/commands.h"
#include "tandem/core/error.h"
#include "tandem/dist/launch.h"
#include "tandem/rl/grpo.h"
#include "tandem/rl/heldout.h"
#include "tandem/train/data_parallel.h"
#include "tandem/train/faults.h"
#include "tandem/train/metrics_server.h"
#include "tandem/train/supervisor.h"
#include "tandem/train/trainer.h"

namespace tandem::cli {

namespace {

void add_training_command(CLI::App& app, Action& action, const std::string& name) {
  const bool sft = name == "sft", grpo = name == "grpo";
  auto* cmd = app.add_subcommand(
      name, sft    ? "fine-tune a checkpoint on labelled examples (a config with [sft])"
            : grpo ? "reinforcement learning with verifiable rewards from a checkpoint (a "
                     "config with [grpo])"
                   : "train a model from a TOML config");
  struct Args {
    std::string config, out_dir, data_dir, inject;
    bool resume = false, no_supervise = false, worker = false;
    int64_t steps = -1, stop_after = -1;
    int threads = -1;
    int nproc = -1, nnodes = -1, node_rank = -1;
    std::string rdzv;
    int metrics_port = -1;
    std::string metrics_host = "127.0.0.1";
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("config", a->config, "run config (TOML)")->required();
  cmd->add_flag("--resume", a->resume, "continue from the newest state that verifies");
  cmd->add_option("--out-dir", a->out_dir, "override run.out_dir");
  cmd->add_option("--data-dir", a->data_dir, "override data.dir");
  cmd->add_option("--max-steps", a->steps, "override train.max_steps");
  cmd->add_option("--stop-after", a->stop_after, "stop (with a checkpoint) after this step");
  cmd->add_option("--threads", a->threads, "override train.threads");
  cmd->add_option("--inject", a->inject,
                  "inject faults, e.g. 'crash@50,nan_grad@80' (docs/resilience.md)");
  cmd->add_option("--nproc", a->nproc, "data parallel: ranks on this machine (default 1)");
  cmd->add_option("--nnodes", a->nnodes, "data parallel: machines in the job (default 1)");
  cmd->add_option("--node-rank", a->node_rank, "data parallel: this machine's place, 0..nnodes-1");
  cmd->add_option("--rdzv", a->rdzv,
                  "data parallel: HOST:PORT of the rendezvous, served by node 0 (default: "
                  "MASTER_ADDR:MASTER_PORT, or any free local port for one machine)");
  cmd->add_option("--metrics-port", a->metrics_port,
                  "serve Prometheus metrics of the run at http://HOST:PORT/metrics (0: any free "
                  "port; off unless given)");
  cmd->add_option("--metrics-host", a->metrics_host, "address of --metrics-port")
      ->capture_default_str();
  cmd->add_flag("--no-supervise", a->no_supervise,
                "run in this process: no restarts after a crash or hang");
  cmd->add_flag("--worker", a->worker, "internal: the supervised training process")
      ->group("");
  cmd->callback([&action, a, name, sft, grpo] {
    action = [a, name, sft, grpo] {
      RunConfig cfg = load_run_config(a->config);
      if (sft && !cfg.sft.enabled)
        fail("[sft] " + a->config + " has no [sft] table (init, train): `tandem sft` fine-tunes "
             "a checkpoint on labelled examples");
      if (!sft && cfg.sft.enabled)
        fail("[" + name + "] " + a->config + " has an [sft] table: run it with `tandem sft`");
      if (grpo && !cfg.grpo.enabled)
        fail("[grpo] " + a->config + " has no [grpo] table (init, prompts): `tandem grpo` "
             "trains a checkpoint against verifiable rewards");
      if (!grpo && cfg.grpo.enabled)
        fail("[" + name + "] " + a->config + " has a [grpo] table: run it with `tandem grpo`");
      if (!a->out_dir.empty()) cfg.out_dir = a->out_dir;
      if (!a->data_dir.empty()) cfg.data_dir = a->data_dir;
      if (a->steps > 0) cfg.train.max_steps = a->steps;
      if (a->threads >= 0) cfg.train.threads = a->threads;
      if (!a->inject.empty()) {
        FaultPlan::parse(a->inject);  // a bad spec is an error here, before anything runs
        ::setenv("TANDEM_FAULTS", a->inject.c_str(), 1);
      }
      LaunchSpec launch;
      if (!a->worker) {
        launch = resolve_launch(a->nproc, a->nnodes, a->node_rank, a->rdzv);
        if (launch.distributed() && cfg.train.grad_accum % launch.world() != 0)
          fail("[dist] train.grad_accum = " + std::to_string(cfg.train.grad_accum) +
               " micro-batches (the global batch is grad_accum x batch_size sequences) cannot "
               "be split over " + std::to_string(launch.world()) +
               " ranks: use a number of ranks that divides it");
        if (launch.distributed() && grpo)
          fail("[dist] GRPO runs on one rank for now: drop --nproc / --nnodes");
        if (launch.distributed() && a->no_supervise)
          fail("[dist] --no-supervise runs one process; " + std::to_string(launch.world()) +
               " ranks (" + launch.source + ") need the supervisor");
      }
      // The process that owns the run serves its metrics: the supervisor (node 0's), or this
      // one without a supervisor.
      std::unique_ptr<TrainMetricsServer> metrics;
      if (a->metrics_port >= 0 && !a->worker && launch.node_rank == 0) {
        metrics = std::make_unique<TrainMetricsServer>(cfg.out_dir, a->metrics_host, a->metrics_port);
        std::fprintf(stderr, "[%s] metrics: http://%s:%d/metrics\n", name.c_str(),
                     a->metrics_host.c_str(), metrics->port());
        std::fflush(stderr);
      }
      if (!a->no_supervise && !a->worker) {
        std::vector<std::string> argv = {"tandem", name, a->config, "--worker"};
        auto opt = [&](const char* flag, const std::string& v) {
          if (!v.empty()) argv.insert(argv.end(), {flag, v});
        };
        opt("--out-dir", a->out_dir);
        opt("--data-dir", a->data_dir);
        if (a->steps > 0) opt("--max-steps", std::to_string(a->steps));
        if (a->stop_after > 0) opt("--stop-after", std::to_string(a->stop_after));
        if (a->threads >= 0) opt("--threads", std::to_string(a->threads));
        int rc = run_supervised(cfg, argv, a->resume, launch);
        if (rc != 0) std::exit(rc);
        return;
      }
      TrainOptions opts;
      opts.resume = a->resume;
      opts.stop_after = a->stop_after;
      if (sft && !cfg.sft.eval_prompts.empty())
        opts.make_eval = [](const RunConfig& c, const Tokenizer& tok) {
          return std::unique_ptr<ExtraEval>(new SftExactMatch(c, tok));
        };
      if (grpo)
        opts.make_source = [](const RunConfig& c, const Tokenizer& tok, Llama& m, Backend& be) {
          return std::unique_ptr<StepSource>(new GrpoSource(c, tok, m, be));
        };
      TrainResult r = run_training(cfg, opts);
      if (!r.diagnosis.empty()) {
        std::fprintf(stderr, "[guard] %s\n", r.diagnosis.c_str());
        std::fflush(stderr);
        std::exit(kExitDiagnosis);
      }
      if (r.regroup) std::exit(kExitRegroup);  // the supervisor starts it again at once
      if (rank_env_from_environment().rank != 0) return;  // rank 0 speaks for the group
      char val[48] = "";
      if (r.last_val_loss >= 0) std::snprintf(val, sizeof val, ", val loss %.4f", r.last_val_loss);
      std::fprintf(stderr, "[train] done: step %lld, loss %.4f%s, %.0f tok/s\n", (long long)r.step,
                   r.last_loss, val, r.tokens_per_s);
      if (r.rollbacks > 0)
        std::fprintf(stderr, "[train] guard: %d rollbacks, %d transient faults, %d skipped batches\n",
                     r.rollbacks, r.transient_faults, r.skipped_batches);
      std::fprintf(stderr, "[train] checkpoint: %s\n", r.last_checkpoint.c_str());
    };
  });
}

}  // namespace

void add_train(CLI::App& app, Action& action) {
  add_training_command(app, action, "train");
  add_training_command(app, action, "sft");
  add_training_command(app, action, "grpo");
}

}  // namespace tandem::cli
