// The training loop. All randomness is counter-based and the data cursor is a sample count, so
// a run resumed from a checkpoint continues bit for bit as if it had never stopped.
#include "tandem/train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <vector>

#include "tandem/backend/backend.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/hash.h"
#include "tandem/data/loader.h"
#include "tandem/data/shard.h"
#include "tandem/data/tokenizer.h"
#include "tandem/model/llama.h"
#include "tandem/train/checkpoint.h"
#include "tandem/train/metrics.h"
#include "tandem/train/optimizer.h"
#include "tandem/train/schedule.h"

namespace tandem {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// Validation draws from its own seed so it never shares windows with training order.
constexpr uint64_t kValSeedXor = 0x76616c6964ull;

std::string fmt_duration(double s) {
  char buf[32];
  long t = (long)s;
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

// A checkpoint continues only the run that wrote it: the model must be the same, and so must
// the seed (it fixes the data order). Batch-shape changes are allowed but end bit-exactness.
void check_resumable(const RunConfig& ck, const RunConfig& now, const std::string& dir) {
  const ModelConfig &a = ck.model, &b = now.model;
  if (a.dim != b.dim || a.n_layers != b.n_layers || a.n_heads != b.n_heads ||
      a.n_kv_heads != b.n_kv_heads || a.hidden_dim != b.hidden_dim ||
      a.vocab_size != b.vocab_size || a.tie_embeddings != b.tie_embeddings ||
      a.rope_theta != b.rope_theta || a.norm_eps != b.norm_eps)
    fail("[train] checkpoint " + dir + " was trained with a different [model] config");
  if (ck.train.seed != now.train.seed)
    fail("[train] checkpoint " + dir + " was trained with train.seed = " +
         std::to_string(ck.train.seed) + ", the config says " + std::to_string(now.train.seed));
  if (ck.train.batch_size != now.train.batch_size || ck.train.seq_len != now.train.seq_len ||
      ck.train.grad_accum != now.train.grad_accum)
    std::fprintf(stderr,
                 "[train] warning: batch_size, seq_len or grad_accum differ from %s; the run "
                 "continues but is no longer comparable bit for bit with an uninterrupted one\n",
                 dir.c_str());
}

}  // namespace

TrainResult run_training(const RunConfig& cfg, const TrainOptions& opts) {
  const TrainConfig& tc = cfg.train;
  if (cfg.data_dir.empty()) fail("[config] " + cfg.source + ": key 'data.dir' is missing");
  if (cfg.out_dir.empty()) fail("[config] " + cfg.source + ": key 'run.out_dir' is missing");
  if (path_exists(cfg.out_dir) && !std::filesystem::is_directory(cfg.out_dir))
    fail("[train] run directory '" + cfg.out_dir + "' exists and is not a directory");
  const std::string tok_path = cfg.data_dir + "/tokenizer.model";
  if (!path_exists(cfg.data_dir))
    fail("[train] data directory '" + cfg.data_dir +
         "' does not exist (run `tandem data prepare`)");
  Tokenizer tok = Tokenizer::load(tok_path);
  if (tok.vocab_size() != cfg.model.vocab_size)
    fail("[train] tokenizer " + tok_path + " has a vocabulary of " +
         std::to_string(tok.vocab_size()) + " but model.vocab_size is " +
         std::to_string(cfg.model.vocab_size));
  ShardReader train_shard(cfg.data_dir + "/train.bin");
  ShardReader val_shard(cfg.data_dir + "/val.bin");
  const std::string config_text = run_config_toml(cfg);
  for (const ShardReader* s : {&train_shard, &val_shard})
    if ((int)s->vocab_size() != cfg.model.vocab_size)
      fail("[train] shard " + s->path() + " was tokenized with a vocabulary of " +
           std::to_string(s->vocab_size()) + ", model.vocab_size is " +
           std::to_string(cfg.model.vocab_size));
  BatchLoader train_loader(train_shard, tc.batch_size, tc.seq_len, tc.seed);
  // Validation needs a val shard only when it runs (a dataset may hold out nothing).
  std::optional<BatchLoader> val_loader;
  if (tc.eval_every > 0)
    val_loader.emplace(val_shard, tc.batch_size, tc.seq_len, tc.seed ^ kValSeedXor);
  if (opts.progress) std::fprintf(stderr, "%s\n", cfg.model.summary().c_str());

  std::unique_ptr<Backend> be = make_backend(tc.backend, tc.threads);
  Llama model(cfg.model, *be);
  AdamW opt(model, tc.beta1, tc.beta2, tc.eps, tc.weight_decay);
  const size_t P = model.num_params();

  // ---- start fresh or resume ----
  int64_t step = 0, samples = 0;
  std::vector<std::string> rejected;
  auto latest = latest_checkpoint(cfg.out_dir, &rejected);
  for (const auto& r : rejected)
    std::fprintf(stderr, "[train] skipping checkpoint: %s\n", r.c_str());
  if (latest && !opts.resume)
    fail("[train] run directory '" + cfg.out_dir +
         "' already has checkpoints: pass --resume to continue it, or choose another run.out_dir");
  if (latest) {
    CheckpointData ck = load_checkpoint(*latest, model.layout(), true);
    check_resumable(parse_run_config(ck.state.config_text, *latest + "/manifest.json"), cfg,
                    *latest);
    if (ck.state.tokenizer_sha256 != tok.sha256())
      fail("[train] checkpoint " + *latest + " was trained with a different tokenizer than " +
           tok_path);
    model.load_params(ck.params.data());
    be->to_device(opt.m(), ck.m.data(), P * sizeof(float));
    be->to_device(opt.v(), ck.v.data(), P * sizeof(float));
    step = ck.state.step;
    samples = ck.state.samples_consumed;
    std::fprintf(stderr, "[train] resumed from %s (step %lld)\n", latest->c_str(), (long long)step);
  } else {
    if (opts.resume && !rejected.empty())
      std::fprintf(stderr, "[train] no checkpoint verifies; starting from scratch\n");
    model.init(tc.seed);
  }
  make_dirs(cfg.out_dir);
  remove_stale_temporaries(cfg.out_dir);
  atomic_write_file(cfg.out_dir + "/config.toml", config_text);
  MetricsLog metrics(cfg.out_dir + "/metrics.jsonl", step);

  const int B = tc.batch_size, T = tc.seq_len, A = tc.grad_accum;
  const int64_t global_batch = (int64_t)B * A;
  const int64_t end_step =
      opts.stop_after > 0 ? std::min(opts.stop_after, tc.max_steps) : tc.max_steps;
  std::vector<int32_t> inputs((size_t)A * B * T), targets((size_t)A * B * T);
  model.reserve(B, T);
  model.zero_grads();

  g_stop = 0;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const bool tty = isatty(STDERR_FILENO);
  auto t_start = std::chrono::steady_clock::now();
  const int64_t first_step = step;
  TrainResult res;
  auto save = [&]() {
    CheckpointState st;
    st.step = step;
    st.samples_consumed = samples;
    st.seed = tc.seed;
    st.config_text = config_text;
    st.tokenizer_sha256 = tok.sha256();
    std::vector<float> p(P), m(P), v(P);
    model.save_params(p.data());
    be->to_host(m.data(), opt.m(), P * sizeof(float));
    be->to_host(v.data(), opt.v(), P * sizeof(float));
    res.last_checkpoint =
        save_checkpoint(cfg.out_dir, st, model.layout(), p.data(), m.data(), v.data(), tok_path);
    prune_checkpoints(cfg.out_dir, tc.keep_checkpoints);
  };
  auto evaluate = [&]() {
    double sum = 0;
    for (int i = 0; i < tc.eval_batches; ++i) {
      val_loader->fill((int64_t)i * B, inputs.data(), targets.data());
      model.forward(inputs.data(), B, T);
      sum += model.loss(targets.data(), 0.f, false);
    }
    return sum / ((double)tc.eval_batches * B * T);
  };

  while (step < end_step && !g_stop) {
    auto t0 = std::chrono::steady_clock::now();
    const float lr = lr_at(step, tc.lr, tc.min_lr, tc.warmup_steps, tc.max_steps);
    int64_t valid = 0;
    for (int a = 0; a < A; ++a)
      train_loader.fill(samples + (int64_t)a * B, inputs.data() + (size_t)a * B * T,
                        targets.data() + (size_t)a * B * T);
    for (int32_t t : targets) valid += t >= 0;
    const float dscale = valid > 0 ? 1.0f / (float)valid : 0.f;
    double loss_sum = 0;
    model.zero_grads();
    for (int a = 0; a < A; ++a) {
      model.forward(inputs.data() + (size_t)a * B * T, B, T);
      loss_sum += model.loss(targets.data() + (size_t)a * B * T, dscale, true);
      model.backward();
    }
    const double loss = valid > 0 ? loss_sum / (double)valid : 0.0;
    const double gnorm = clip_grad_norm(model, tc.grad_clip);
    const bool finite = std::isfinite(loss) && std::isfinite(gnorm);
    if (finite) opt.step(lr, step + 1);
    samples += global_batch;
    ++step;
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    double tps = (double)(step - first_step) * global_batch * T / elapsed;
    res.tokens_per_s = tps;
    res.last_loss = loss;
    metrics.step(step, loss, lr, gnorm, global_batch * T / dt, elapsed, !finite);
    if (!finite)
      std::fprintf(stderr, "\n[train] step %lld: non-finite loss or gradient, update skipped\n",
                   (long long)step);
    if (opts.progress && (tty || step % tc.log_every == 0 || step == end_step)) {
      double eta = (double)(end_step - step) * elapsed / (double)(step - first_step);
      std::fprintf(stderr,
                   "%sstep %lld/%lld | loss %.4f | lr %.2e | grad %.3f | %.0f tok/s | ETA %s%s",
                   tty ? "\r" : "", (long long)step, (long long)tc.max_steps, loss, lr, gnorm, tps,
                   fmt_duration(eta).c_str(), tty ? "   " : "\n");
      std::fflush(stderr);
    }
    if (tc.eval_every > 0 && (step % tc.eval_every == 0 || step == tc.max_steps)) {
      res.last_val_loss = evaluate();
      metrics.eval(step, res.last_val_loss);
      if (opts.progress)
        std::fprintf(stderr, "%sstep %lld | val loss %.4f\n", tty ? "\n" : "", (long long)step,
                     res.last_val_loss);
    }
    if (tc.checkpoint_every > 0 && step % tc.checkpoint_every == 0 && step < end_step) save();
  }
  if (tty && opts.progress) std::fprintf(stderr, "\n");
  if (g_stop)
    std::fprintf(stderr, "[train] interrupted at step %lld: saving a checkpoint\n",
                 (long long)step);
  if (step > first_step)
    save();
  else if (latest)
    res.last_checkpoint = *latest;  // nothing new to save: the run was already complete
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  res.step = step;
  return res;
}

}  // namespace tandem
