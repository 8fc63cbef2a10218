// The training loop. All randomness is counter-based and the data cursor is a sample count, so
// a run resumed from a checkpoint or a snapshot continues bit for bit as if it had never
// stopped. Every update is judged by the guard before it is committed; a bad one is rolled back
// to the in-memory snapshot and replayed once to tell a hardware fault from a bad batch.
#include "tandem/train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "tandem/backend/backend.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/hash.h"
#include "tandem/core/rng.h"
#include "tandem/core/run_lock.h"
#include "tandem/data/chat.h"
#include "tandem/data/loader.h"
#include "tandem/data/shard.h"
#include "tandem/data/tokenizer.h"
#include "tandem/model/llama.h"
#include "tandem/ckpt/checkpoint.h"
#include "tandem/train/ckpt_writer.h"
#include "tandem/train/data_parallel.h"
#include "tandem/train/events.h"
#include "tandem/train/faults.h"
#include "tandem/train/guard.h"
#include "tandem/train/heartbeat.h"
#include "tandem/train/metrics.h"
#include "tandem/train/optimizer.h"
#include "tandem/train/run_state.h"
#include "tandem/train/schedule.h"
#include "tandem/train/snapshot.h"
#include "tandem/train/step.h"
#include "tandem/train/straggler.h"
#include "tandem/train/train_data.h"
#include "tandem/train/resume.h"

namespace tandem {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }


using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string fmt_duration(double s) {
  char buf[32];
  long t = (long)s;
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

// A guard verdict as a number the ranks can sum (0: accepted).
const char* const kVerdictKinds[] = {"", "non_finite", "loss_spike", "grad_spike",
                                     "replay_mismatch"};
int verdict_code(const GuardVerdict& v) {
  if (v.ok) return 0;
  for (int i = 1; i < 5; ++i)
    if (v.kind == kVerdictKinds[i]) return i;
  return 1;
}
std::string verdict_kind(int code) {
  return code >= 1 && code < 5 ? kVerdictKinds[code] : "non_finite";
}

}  // namespace

TrainResult run_training(const RunConfig& cfg, const TrainOptions& opts) {
  const TrainConfig& tc = cfg.train;
  const CheckpointConfig& cc = cfg.checkpoint;
  const GuardConfig& gc = cfg.guard;
  if (cfg.data_dir.empty()) fail("[config] " + cfg.source + ": key 'data.dir' is missing");
  if (cfg.out_dir.empty()) fail("[config] " + cfg.source + ": key 'run.out_dir' is missing");
  if (path_exists(cfg.out_dir) && !std::filesystem::is_directory(cfg.out_dir))
    fail("[train] run directory '" + cfg.out_dir + "' exists and is not a directory");
  FaultPlan faults = opts.faults ? FaultPlan::parse(*opts.faults) : FaultPlan::from_env();
  const std::string tok_path = cfg.data_dir + "/tokenizer.model";
  if (!path_exists(cfg.data_dir))
    fail("[train] data directory '" + cfg.data_dir +
         "' does not exist (run `tandem data prepare`)");
  Tokenizer tok = Tokenizer::load(tok_path);
  if (tok.vocab_size() != cfg.model.vocab_size)
    fail("[train] tokenizer " + tok_path + " has a vocabulary of " +
         std::to_string(tok.vocab_size()) + " but model.vocab_size is " +
         std::to_string(cfg.model.vocab_size));
  const std::string config_text = run_config_toml(cfg);
  const TrainData data(cfg, tok);  // the shards, or the SFT examples
  const std::string init_dir =
      cfg.sft.enabled || cfg.grpo.enabled ? resolve_sft_init(cfg, tok.sha256(), tok_path)
                                          : std::string();
  if (cfg.grpo.enabled && !opts.make_source)
    fail("[grpo] " + cfg.source + " has a [grpo] table: run it with `tandem grpo`");

  // Data parallel: rank 0 is the run's only writer; the others read nothing from the run
  // directory and write nothing to it (they may be on machines without it).
  const RankEnv renv = rank_env_from_environment();
  const bool is_writer = renv.rank == 0;
  faults.set_rank(renv.rank);
  if (renv.distributed() && cfg.grpo.enabled)
    fail("[dist] GRPO runs on one rank for now: drop --nproc / --nnodes");
  if (renv.distributed() && tc.grad_accum % renv.world != 0)
    fail("[dist] train.grad_accum = " + std::to_string(tc.grad_accum) +
         " micro-batches cannot be split over " + std::to_string(renv.world) +
         " ranks: use a number of ranks that divides it");
  // One writer per run directory, from here to the end (adopted from the supervisor when it
  // holds it): a second `tandem train` on this directory is refused, naming this process.
  std::optional<RunLock> run_lock;
  if (is_writer) run_lock.emplace(cfg.out_dir, "tandem train");
  std::vector<std::string> rejected, rejected_dirs;
  std::optional<std::string> latest;
  if (is_writer) latest = latest_checkpoint(cfg.out_dir, &rejected, &rejected_dirs);
  if (latest && !opts.resume)
    fail("[train] run directory '" + cfg.out_dir +
         "' already has checkpoints: pass --resume to continue it, or choose another run.out_dir");
  const bool progress = opts.progress && is_writer;
  if (progress) std::fprintf(stderr, "%s\n", cfg.model.summary().c_str());

  // Ranks on one machine split its cores.
  int threads = tc.threads;
  if (threads == 0 && renv.local_world > 1)
    threads = std::max(1, (int)std::thread::hardware_concurrency() / renv.local_world);
  std::unique_ptr<Backend> be = make_backend(tc.backend, threads);
  const std::string hardware = be->describe();
  if (progress) std::fprintf(stderr, "[train] backend: %s\n", hardware.c_str());
  Llama model(cfg.model, *be);
  AdamW opt(model, tc.beta1, tc.beta2, tc.eps, tc.weight_decay);
  std::unique_ptr<StepSource> source;  // GRPO: rollouts and the policy-gradient loss
  if (opts.make_source) source = opts.make_source(cfg, tok, model, *be);
  std::unique_ptr<ExtraEval> extra_eval;  // SFT: exact match on held-out prompts
  if (opts.make_eval) extra_eval = opts.make_eval(cfg, tok);
  const size_t P = model.num_params();

  // The group forms once every rank has started, before anything is written (each with the same config, data and binary).
  RankGroup group = renv.distributed() ? RankGroup(renv, run_fingerprint(cfg, tok.sha256()))
                                       : RankGroup();
  if (progress && renv.distributed())
    std::fprintf(stderr, "[dist] %d ranks (%s)\n", group.world(), group.describe().c_str());

  // ---- the run directory and its logs exist from here on ----
  if (is_writer) {
    make_dirs(cfg.out_dir);
    remove_stale_temporaries(cfg.out_dir);
  }
  const std::string log_dir = is_writer ? cfg.out_dir + "/" : "";
  EventLog events(is_writer ? log_dir + "events.jsonl" : "");
  // The other ranks log only what happens to them alone (faults, failed collectives), where
  // they share the run directory.
  EventLog rank_events(!is_writer && path_exists(cfg.out_dir) ? cfg.out_dir + "/events.jsonl" : "");
  if (renv.distributed()) {
    events.tag("rank", renv.rank);
    rank_events.tag("rank", renv.rank);
  }
  EventLog& own_events = is_writer ? events : rank_events;
  Heartbeat hb;
  faults.bind(cfg.out_dir, &own_events,
              is_writer ? "faults.fired" : "faults.rank-" + std::to_string(renv.rank) + ".fired");
  events.emit("train_start", {{"resume", opts.resume},
                              {"supervised", hb.active()},
                              {"backend", hardware},
                              {"ranks", group.world()},
                              {"dist", group.describe()}});
  for (size_t i = 0; i < rejected.size(); ++i) {
    std::fprintf(stderr, "[train] skipping checkpoint: %s\n", rejected[i].c_str());
    std::string aside;
    try {
      aside = set_aside(rejected_dirs[i]);
    } catch (const std::exception&) {
      // a read-only run directory: leave it where it is; it is still never loaded
    }
    events.emit("checkpoint_rejected",
                {{"dir", rejected_dirs[i]}, {"reason", rejected[i]}, {"moved_to", aside}});
  }

  // ---- start fresh, or resume from the newest state that verifies: memory, disk, a rank ----
  // A policy-gradient objective does not fall like a loss: the guard watches its gradient.
  GuardConfig guard_cfg = gc;
  if (opts.make_source) guard_cfg.loss_z = std::numeric_limits<double>::infinity();
  RunState state(guard_cfg);
  SnapshotStore snap(inherited_snapshot_fd(), P);
  int64_t disk_step = -1;
  if (latest) disk_step = read_manifest(*latest)["step"].get<int64_t>();
  const int B = tc.batch_size, T = tc.seq_len, A = tc.grad_accum;
  GradReducer reducer(model, A, group);
  reducer.set_comm_delay(faults.comm_delay());
  auto meta_json = [&] {
    nlohmann::json j = state.extra();
    j["step"] = state.step;
    j["samples"] = state.samples;
    j["config"] = config_text;
    j["tokenizer_sha256"] = tok.sha256();
    return j;
  };
  const StartPoint start = restore_start_state(
      {cfg, opts.resume, latest, disk_step, tok.sha256(), tok_path,
       [&] { return meta_json().dump(); }, init_dir},
      snap, model, opt, state, events, faults, group);
  if (start.from.empty() && opts.resume && !rejected.empty())
    std::fprintf(stderr, "[train] no checkpoint verifies; starting from scratch\n");
  if (state.grad_exp.size() != reducer.exponents().size()) state.grad_exp = reducer.exponents();
  if (!start.from.empty() && progress)
    std::fprintf(stderr, "[train] resumed from %s (step %lld)\n",
                 start.from == "memory" ? "the in-memory snapshot"
                 : start.from == "rank" ? "another rank's state"
                                        : start.from.c_str(),
                 (long long)state.step);
  if (!start.from_snapshot) snap.save(*be, model.params(), opt.m(), opt.v(), meta_json().dump());

  if (is_writer) atomic_write_file(cfg.out_dir + "/config.toml", config_text);
  MetricsLog metrics(is_writer ? log_dir + "metrics.jsonl" : "", state.step);
  TimingLog timing(is_writer ? log_dir + "timing.jsonl" : "");
  CheckpointWriter writer(cfg.out_dir, model.layout(), tok_path, cc.keep_last, cc.keep_every,
                          events, faults);
  int64_t on_disk = disk_step;  // newest step known to be saved on disk

  const int64_t global_batch = (int64_t)B * A;
  const int64_t end_step =
      opts.stop_after > 0 ? std::min(opts.stop_after, tc.max_steps) : tc.max_steps;
  StepBatch batch;
  batch.resize(A, B, T);
  std::vector<float> replay_grads;
  model.reserve(B, T);
  model.zero_grads();

  g_stop = 0;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  faults.start_timers();
  hb.ready(state.step);
  const bool tty = isatty(STDERR_FILENO);
  auto t_start = Clock::now(), t_ckpt = Clock::now();
  const int64_t first_step = state.step;
  TrainResult res;
  auto to_checkpoint_state = [&] {
    CheckpointState st;
    st.step = state.step;
    st.samples_consumed = state.samples;
    st.seed = tc.seed;
    st.config_text = config_text;
    st.tokenizer_sha256 = tok.sha256();
    if (has_chat_format(tok)) st.chat_template = chat_template_jinja();
    st.extra = state.extra();
    return st;
  };
  // Forward and backward, then the reduction over the ranks. Every unit of work beats the
  // supervisor's heartbeat: a micro-batch, an evaluation batch, a rollback, a checkpoint file.
  // A slow phase (replays, evaluation, a checkpoint wait) is progress; only silence is a hang.
  auto beat = [&] { hb.beat(); };
  StepComputer stepper(model, *be, reducer, faults, own_events, tc.seed);
  if (source) source->set_events(&events);
  StragglerWatch stragglers(cfg.supervisor.straggler_factor, cfg.supervisor.straggler_window);
  const SupervisorConfig& sc = cfg.supervisor;
  auto run_eval = [&]() {
    return evaluate(
        model, group, data.val_batches(), B, T,
        [&](int64_t i, int32_t* in, int32_t* tg) { data.fill_val(i, in, tg); }, beat,
        data.sft());
  };

  // The step and batch of an anomaly being replayed (-1: none).
  int64_t pending_step = -1, pending_samples = -1;
  int consecutive_rollbacks = 0;
  int64_t retry_at = -1, retry_gap = 1, handled_failure = -1;

  // A collective that fails (a peer died, hung or was cut off) ends this process; the
  // supervisor restarts the group, which resumes from the newest state any rank has.
  try {
  while (state.step < end_step && !g_stop) {
    auto t0 = Clock::now();
    const int64_t n = state.step + 1;  // the step being computed
    if (faults.fire(FaultKind::kHang, n)) {
      std::fprintf(stderr, "\n[faults] hanging at step %lld\n", (long long)n);
      // No progress and no heartbeat; only a stop request (Ctrl-C, SIGTERM) ends it, so a
      // test can hold a run at a known step for as long as it needs.
      while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (path_exists(cfg.out_dir) && faults.fire(FaultKind::kPause, n)) {
      // Before the step's collectives, so the group's deadlines do not run; then rank 0 looks
      // at the rendezvous at once (a test that held the run lets ranks join meanwhile).
      const std::string release = cfg.out_dir + "/faults.release";
      while (!path_exists(release) && !g_stop) {
        hb.beat();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      group.check_growth_now();
    }
    if (const Fault* f = faults.fire(FaultKind::kBitflipParam, n))
      flip_bit(*be, model.params(), stepper.pick(model.params(), P, n, f->bit), f->bit);
    while (state.is_skipped(state.samples)) state.samples += global_batch;
    const int64_t s0 = state.samples;
    int64_t s_next = s0 + global_batch;  // the data cursor after this step
    const float lr = lr_at(state.step, tc.lr, tc.min_lr, tc.warmup_steps, tc.max_steps);
    if (source) {
      s_next = s0;  // advanced by the prompts the rollouts used
      source->next_batch(n, s_next, state.source, batch, beat);
    } else {
      if (data.packed()) batch.doc_start.resize(batch.inputs.size());
      for (int a = 0; a < A; ++a)
        data.fill_train(s0 + (int64_t)a * B, batch.inputs.data() + (size_t)a * B * T,
                        batch.targets.data() + (size_t)a * B * T,
                        data.packed() ? batch.doc_start.data() + (size_t)a * B * T : nullptr);
      const bool poisoned = s0 % global_batch == 0 && faults.poisoned_step(s0 / global_batch + 1);
      if (poisoned)
        events.emit("fault_injected", {{"fault", "bad_batch"}, {"detail", "samples " + std::to_string(s0)}});
      if (poisoned || faults.fire(FaultKind::kSpike, n)) stepper.garble(batch, s0 + 1, cfg.model.vocab_size);
    }
    // A step computed again after a rollback (up to the one that failed) is a replay.
    auto [loss, gnorm] =
        stepper.run(batch, n, state.grad_exp, true, pending_step >= n, beat, source.get());
    if (const Fault* f = faults.fire(FaultKind::kCrash, n))
      faults.crash_now(*f, "step " + std::to_string(n) + " (before its update)");

    GuardVerdict verdict = state.guard.check(loss, gnorm);  // non-finite even when disabled
    if (gc.enabled && verdict.ok && gc.replay_check_every > 0 && n % gc.replay_check_every == 0) {
      // Recompute the same step and compare the gradients bit for bit: a device that
      // computes wrong without crashing shows up here.
      replay_grads.resize(P);
      be->to_host(replay_grads.data(), model.grads(), P * sizeof(float));
      auto [loss2, gnorm2] = stepper.run(batch, n, state.grad_exp, false, true, beat, source.get());
      std::vector<float> g2(P);
      be->to_host(g2.data(), model.grads(), P * sizeof(float));
      const bool same = std::memcmp(g2.data(), replay_grads.data(), P * sizeof(float)) == 0 &&
                        std::memcmp(&loss, &loss2, sizeof loss) == 0;
      events.emit("replay_check", {{"step", n}, {"match", same}});
      if (!same) verdict = {false, "replay_mismatch", 0};
    }
    // The ranks judge together: a step one rank rejects is rejected by all (a fault on one
    // rank's device must not split the replicas).
    const RankGroup::Agreement agreed = group.agree(verdict_code(verdict));
    std::vector<int> rejecting;
    for (int r = 0; r < (int)agreed.verdicts.size(); ++r)
      if (agreed.verdicts[(size_t)r] != 0) rejecting.push_back(r);
    if (verdict.ok && !rejecting.empty())
      verdict = {false, verdict_kind(agreed.verdicts[(size_t)rejecting[0]]), 0};
    if (!gc.enabled && !verdict.ok) {
      // Guard off: a non-finite step is simply not applied.
      events.emit("anomaly", {{"step", n}, {"kind", verdict.kind}, {"action", "update skipped"}});
      state.samples = s_next;
      continue;
    }
    if (!verdict.ok && pending_step == n && pending_samples == s0 && !gc.skip_bad_batches &&
        verdict.kind != "non_finite") {
      // The spike came back on replay from a good state, so it is the batch; with labelled
      // data a hard batch is still data: learn from it rather than skip it.
      events.emit("hard_batch", {{"step", n}, {"kind", verdict.kind}, {"samples", s0},
                                 {"score", verdict.score}});
      pending_step = -1;
      verdict = GuardVerdict{};
    }
    if (!verdict.ok) {
      events.emit("anomaly", {{"step", n},
                              {"kind", verdict.kind},
                              {"loss", std::isfinite(loss) ? nlohmann::json(loss) : nullptr},
                              {"grad_norm", std::isfinite(gnorm) ? nlohmann::json(gnorm) : nullptr},
                              {"score", verdict.score},
                              {"samples", s0},
                              {"ranks", rejecting}});
      std::fprintf(stderr, "%s[guard] step %lld: %s (loss %.4g, grad norm %.4g)\n",
                   tty ? "\n" : "", (long long)n, verdict.kind.c_str(), loss, gnorm);
      if (pending_step == n && pending_samples == s0) {
        // The fault came back when the step was replayed from a good state: it is the data.
        state.skipped.push_back({n, s0});
        ++res.skipped_batches;
        pending_step = -1;
        events.emit("batch_skipped", {{"step", n}, {"samples", s0}, {"kind", verdict.kind}});
        std::fprintf(stderr, "[guard] step %lld: the fault reappeared on replay; skipping the "
                             "batch at sample %lld\n", (long long)n, (long long)s0);
        continue;
      }
      if (consecutive_rollbacks >= gc.max_rollbacks) {
        res.diagnosis =
            "stopped at step " + std::to_string(n) + " after " +
            std::to_string(consecutive_rollbacks) + " consecutive rollbacks (last: " +
            verdict.kind + "). The anomaly survived rollback, replay and skipping batches, so " +
            "it follows the model state or the hyperparameters, not one batch or a transient " +
            "fault: check train.lr and train.grad_clip, or resume from an earlier checkpoint" +
            (on_disk >= 0 ? " (newest on disk: step " + std::to_string(on_disk) + ")" : "");
        events.emit("diagnosis", {{"step", n}, {"kind", verdict.kind}, {"message", res.diagnosis}});
        break;
      }
      ++consecutive_rollbacks;
      ++res.rollbacks;
      auto meta = snap.restore(*be, model.params(), opt.m(), opt.v());
      beat();
      auto j = nlohmann::json::parse(*meta);
      state.step = j["step"].get<int64_t>();
      state.samples = j["samples"].get<int64_t>();
      state.load_extra(j, true);
      metrics.truncate(state.step);
      pending_step = n;
      pending_samples = s0;
      events.emit("rollback", {{"from_step", n}, {"to_step", state.step}, {"kind", verdict.kind}});
      std::fprintf(stderr, "[guard] rolled back to the snapshot of step %lld; replaying\n",
                   (long long)state.step);
      continue;
    }
    if (pending_step == n) {
      ++res.transient_faults;
      events.emit("transient_fault",
                  {{"step", n},
                   {"detail", "the fault did not reappear on replay: a hardware or transient "
                              "fault; the replayed result is kept"}});
      pending_step = -1;
    }

    // ---- commit ----
    clip_grads(model, gnorm, tc.grad_clip);
    opt.step(lr, n);
    state.guard.accept(loss, gnorm);
    state.grad_exp = reducer.exponents();
    state.step = n;
    state.samples = s_next;
    const nlohmann::json step_extra = source ? source->committed(state.source) : nlohmann::json();
    if (pending_step < 0) consecutive_rollbacks = 0;
    const double dt = since(t0), elapsed = since(t_start);
    const double tps = (double)(state.step - first_step) * global_batch * T / elapsed;
    res.tokens_per_s = tps;
    res.last_loss = loss;
    metrics.step(n, loss, lr, gnorm, step_extra);
    timing.step(n, dt, global_batch * T / dt, source ? source->timing() : nlohmann::json());
    hb.step(n);
    if (progress && source && (tty || n % tc.log_every == 0 || n == end_step)) {
      double eta = (double)(end_step - n) * elapsed / (double)(n - first_step);
      std::fprintf(stderr, "%sstep %lld/%lld | reward %.3f | kl %.4f | len %.1f | grad %.3f | ETA %s%s",
                   tty ? "\r" : "", (long long)n, (long long)tc.max_steps,
                   step_extra.value("reward_mean", 0.0), step_extra.value("kl", 0.0),
                   step_extra.value("completion_len", 0.0), gnorm, fmt_duration(eta).c_str(),
                   tty ? "   " : "\n");
      std::fflush(stderr);
    } else if (progress && (tty || n % tc.log_every == 0 || n == end_step)) {
      double eta = (double)(end_step - n) * elapsed / (double)(n - first_step);
      std::fprintf(stderr,
                   "%sstep %lld/%lld | loss %.4f | lr %.2e | grad %.3f | %.0f tok/s | ETA %s%s",
                   tty ? "\r" : "", (long long)n, (long long)tc.max_steps, loss, lr, gnorm, tps,
                   fmt_duration(eta).c_str(), tty ? "   " : "\n");
      std::fflush(stderr);
    }
    if (source && tc.eval_every > 0 && (n % tc.eval_every == 0 || n == tc.max_steps)) {
      const nlohmann::json ev = source->evaluate(beat);
      if (!ev.is_null()) {
        metrics.record(n, ev);
        if (progress)
          std::fprintf(stderr, "%sstep %lld | held-out reward %.4f\n", tty ? "\n" : "",
                       (long long)n, ev.value("val_reward", 0.0));
      }
      hb.beat();
    }
    if (extra_eval && tc.eval_every > 0 && (n % tc.eval_every == 0 || n == tc.max_steps)) {
      const nlohmann::json ev = extra_eval->run(model, beat, &events);
      metrics.record(n, ev);
      if (progress)
        for (const auto& [k, v] : ev.items())
          std::fprintf(stderr, "%sstep %lld | %s %s\n", tty ? "\n" : "", (long long)n, k.c_str(),
                       v.dump().c_str());
    }
    if (data.has_val() && (n % tc.eval_every == 0 || n == tc.max_steps)) {
      const EvalResult ev = run_eval();
      res.last_val_loss = ev.loss;
      res.last_val_accuracy = ev.accuracy;
      metrics.eval(n, ev.loss, ev.accuracy);
      hb.beat();
      if (progress)
        std::fprintf(stderr, "%sstep %lld | val loss %.4f%s\n", tty ? "\n" : "", (long long)n,
                     ev.loss,
                     ev.accuracy >= 0
                         ? (" | token accuracy " + std::to_string(ev.accuracy).substr(0, 6)).c_str()
                         : "");
    }
    for (const StragglerWatch::Change& c : stragglers.observe(reducer.rank_seconds())) {
      events.emit(c.slow ? "straggler" : "straggler_recovered",
                  {{"step", n}, {"straggler_rank", c.rank}, {"ratio", c.ratio},
                   {"rank_s", c.rank_s}, {"others_s", c.others_s}, {"window", sc.straggler_window}});
      if (progress)
        std::fprintf(stderr, "%s[dist] rank %d %s: %.2f s per step against %.2f s for the others\n",
                     tty ? "\n" : "", c.rank, c.slow ? "is a straggler" : "has recovered",
                     c.rank_s, c.others_s);
    }
    if (n % cc.snapshot_every == 0 || n == end_step || agreed.regroup)
      snap.save(*be, model.params(), opt.m(), opt.v(), meta_json().dump());
    if (agreed.regroup) {
      // Ranks wait at the rendezvous: stop here (the snapshot holds this step) and restart
      // into the larger group, which every rank joins from this state.
      events.emit("regroup", {{"step", n}, {"ranks", group.world()},
                              {"reason", "ranks waiting to join"}});
      res.regroup = true;
      break;
    }
    if (gc.fingerprint_every > 0 && n % gc.fingerprint_every == 0) {
      StateFingerprint fp = fingerprint(*be, model.layout(), model.params(), opt.m(), opt.v());
      events.emit("fingerprint",
                  {{"step", n}, {"params", fp.params}, {"optimizer", fp.optimizer}});
      // Data parallel: the replicas must be equal. A rank that differs from the majority
      // computed wrong (a silent corruption on its device): stop with a diagnosis naming it.
      const std::vector<int> odd = group.diverged(fp.params.substr(0, 32) + fp.optimizer.substr(0, 32));
      if (!odd.empty()) {
        std::string names;
        for (int r : odd) names += (names.empty() ? "" : ", ") + std::to_string(r);
        res.diagnosis =
            "rank " + names + " diverged from the other ranks by step " + std::to_string(n) +
            " (its parameter or optimizer fingerprint differs): a silent data corruption on that "
            "rank's device or host. Its gradients reached every rank since the last agreeing "
            "fingerprint (step " + std::to_string(n - gc.fingerprint_every) +
            "): resume from a checkpoint at or before it" +
            (on_disk >= 0 ? " (newest on disk: step " + std::to_string(on_disk) + ")" : "") +
            ", on other hardware for that rank";
        events.emit("rank_diverged", {{"step", n}, {"ranks", odd}, {"message", res.diagnosis}});
        break;
      }
    }
    // A failed write is retried after 1, 2, 4 ... steps (at most 64).
    if (!writer.busy() && writer.last_failed() && writer.last_attempt_step() != handled_failure) {
      handled_failure = writer.last_attempt_step();
      retry_at = n + retry_gap;
      retry_gap = std::min<int64_t>(retry_gap * 2, 64);
    }
    if (!writer.busy() && !writer.last_failed()) {
      retry_gap = 1;
      on_disk = std::max(on_disk, writer.last_saved_step());
    }
    const bool due = (cc.every_steps > 0 && n % cc.every_steps == 0) ||
                     (cc.every_seconds > 0 && since(t_ckpt) >= cc.every_seconds) ||
                     (retry_at > 0 && n >= retry_at);
    if (due && n < end_step && is_writer) {
      retry_at = -1;
      t_ckpt = Clock::now();
      writer.submit(*be, model.params(), opt.m(), opt.v(), to_checkpoint_state(), beat);
    }
  }
  } catch (const CommError& e) {
    const char* kind = e.kind() == CommError::Kind::kTimeout   ? "timeout"
                       : e.kind() == CommError::Kind::kAborted ? "aborted"
                                                               : "peer_lost";
    own_events.emit("collective_failed",
                {{"step", state.step + 1}, {"rank", group.rank()}, {"kind", kind},
                 {"waited_s", e.waited_s()}, {"message", e.what()}});
    throw;
  }
  if (tty && progress) std::fprintf(stderr, "\n");
  writer.wait(beat);
  if (!writer.last_failed()) on_disk = std::max(on_disk, writer.last_saved_step());
  res.step = state.step;
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (!res.diagnosis.empty() || res.regroup) return res;
  if (g_stop) {
    std::fprintf(stderr, "[train] interrupted at step %lld: saving a checkpoint\n",
                 (long long)state.step);
    events.emit("stop_requested", {{"step", state.step}});
  }
  if (state.step > on_disk && is_writer) {
    hb.beat();
    writer.submit(*be, model.params(), opt.m(), opt.v(), to_checkpoint_state(), beat);
    writer.wait(beat);
    if (writer.last_failed())
      fail("[checkpoint] the final checkpoint (step " + std::to_string(state.step) +
           ") was not written: " + writer.last_error());
    res.last_checkpoint = writer.last_saved_dir();
  } else {
    res.last_checkpoint = writer.last_saved_step() == state.step ? writer.last_saved_dir()
                          : latest ? *latest
                                   : "";
  }
  events.emit("train_end", {{"step", state.step},
                            {"stopped", (bool)g_stop},
                            {"supervised", hb.active()},
                            {"ranks", group.world()},
                            {"comm_s", reducer.comm_seconds()},
                            {"train_s", since(t_start)}});
  return res;
}

}  // namespace tandem
