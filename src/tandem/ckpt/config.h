// Run configuration read from a TOML file: [model], [data], [train], [checkpoint], [guard],
// [supervisor] and [run] tables. Every key is
// checked: unknown keys, missing keys and wrong types are errors naming the file and the key.
#pragma once

#include <cstdint>
#include <string>

#include "tandem/model/config.h"

namespace tandem {

struct TrainConfig {
  int batch_size = 8;  // sequences per micro-batch
  int seq_len = 256;   // tokens per sequence
  int grad_accum = 1;  // micro-batches per optimizer step
  int64_t max_steps = 1000;
  float lr = 1e-3f;
  float min_lr = 1e-4f;
  int64_t warmup_steps = 100;
  float weight_decay = 0.1f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f;    // <= 0 disables clipping
  int64_t eval_every = 100;  // steps; 0 disables
  int eval_batches = 8;
  int64_t log_every = 10;
  uint64_t seed = 1337;
  int threads = 0;  // 0 = all cores
  std::string backend = "cpu";
};

// [checkpoint]: when state is saved to disk and to the in-memory snapshot, and what is kept.
struct CheckpointConfig {
  int64_t every_steps = 0;     // 0: not by step count
  double every_seconds = 60;   // 0: not by time; either trigger saves (one is always at the end)
  int keep_last = 3;           // newest K kept; 0 keeps all
  int64_t keep_every = 0;      // also keep steps divisible by M (0: none)
  int64_t snapshot_every = 1;  // steps between in-memory snapshots (rollback and fast restart)
};

// [guard]: the numerical fault guard, checked before every update is committed.
struct GuardConfig {
  bool enabled = true;
  int window = 50;                 // recent steps the robust score is measured against
  int min_history = 20;            // spikes are judged only once this many steps are known
  double loss_z = 8.0;             // robust z-score of the loss that counts as a spike
  double grad_z = 100.0;           // the same for the gradient norm (clipping absorbs milder ones)
  int max_rollbacks = 3;           // consecutive rollbacks before the run stops with a diagnosis
  int64_t fingerprint_every = 100; // steps between state fingerprints in the event log; 0: off
  int64_t replay_check_every = 0;  // steps between bit-exact gradient replays; 0: off
  // A spike that comes back when its step is replayed follows the batch: skip it as bad data
  // (pre-training), or learn from it as a hard batch (false; the default for [sft], where
  // every labelled example counts).
  bool skip_bad_batches = true;
};

// [supervisor]: restarts of a crashed or hung training process.
struct SupervisorConfig {
  int max_restarts = 100;          // restart budget for one `tandem train`
  int max_failures = 5;            // consecutive restarts without progress before giving up
  double backoff_s = 0.1;          // first restart delay; doubles per failure without progress
  double backoff_max_s = 30;
  double hang_factor = 10;         // hang: no heartbeat for factor x median step time...
  double hang_min_s = 60;          // ...but never less than this
  double startup_timeout_s = 600;  // before the first heartbeat of a process
  double collective_timeout_s = 30;  // data parallel: deadline of one collective
  int min_ranks = 0;         // data parallel: re-form with fewer ranks, down to this (0: never)
  double regroup_settle_s = 5;  // ...once no rank has joined for this long
  // data parallel: a rank whose compute time per step stays above this many times the other
  // ranks' median over `straggler_window` steps is reported as a straggler (0: off)
  double straggler_factor = 1.5;
  int straggler_window = 20;
};

// [sft]: supervised fine-tuning (`tandem sft`) on labelled JSONL (data/sft.h), starting from
// the weights of a checkpoint.
struct SftConfig {
  bool enabled = false;  // the config has an [sft] table
  std::string init;      // a run directory (its newest checkpoint) or a step-NNNNNNNN/ directory
  std::string train;     // JSONL of examples
  std::string val;       // held-out JSONL ("": none)
  std::string loss_on = "assistant";  // "assistant" (or the completion) or "all"
  bool pack = false;  // several examples per row, attention kept within each
  // Exact match on held-out prompts with a checker, every train.eval_every ("": off).
  std::string eval_prompts, eval_verifier = "exact_match", eval_pattern;
  int eval_limit = 200, eval_max_new_tokens = 32;
};

// [grpo]: reinforcement learning with verifiable rewards (`tandem grpo`), starting from the
// weights of a checkpoint; rollouts on the inference engine (docs/grpo.md).
struct GrpoConfig {
  bool enabled = false;      // the config has a [grpo] table
  std::string init;          // a run directory (its newest checkpoint) or a step directory
  std::string ref;           // the frozen KL reference ("": init)
  std::string prompts;       // JSONL of prompts with references (rl/prompts.h)
  std::string val;           // held-out prompts, scored greedily every train.eval_every ("": none)
  int val_limit = 200;       // held-out prompts scored (0: all)
  std::string loss = "grpo"; // grpo, dr_grpo or dapo
  int group_size = 8;        // completions per prompt
  int prompts_per_step = 16;
  int max_new_tokens = 32;
  double temperature = 1.0;
  int top_k = 0;             // 0: off
  double top_p = 1.0;        // 1: off
  double clip_low = 0.2;     // the ratio's clip range is [1 - clip_low, 1 + clip_high]
  double clip_high = -1;     // -1: 0.28 for dapo, clip_low otherwise
  double beta = 0.0;         // KL penalty to the reference (k3); 0: no reference model
  int passes = 1;            // optimisation passes (optimizer steps) per batch of rollouts
  int dynamic_sampling = -1; // drop groups with identical rewards and sample more (-1: dapo)
  int max_resample = 4;      // dynamic sampling: batches of prompts tried per step
  int overlong_mask = -1;    // completions cut at max_new_tokens leave the loss (-1: dapo)
  int rollout_slots = 0;     // sequences decoded together (0: all of a step's)
  // The reward: the verifier (rl/verifier.h) plus, optionally, a format check weighed in.
  std::string verifier = "exact_match";  // exact_match, regex, countdown or command
  std::string pattern, command;
  double timeout_s = 30;
  std::string on_error = "stop";
  std::string format_pattern;  // regex reward added with weight format_weight ("": none)
  double format_weight = 0.1;
};

struct RunConfig {
  std::string source;  // the file it came from
  std::string text;    // the file's text, stored in checkpoints
  ModelConfig model;
  std::string data_dir;  // a prepared dataset (tokenizer.model, train.bin, val.bin)
  TrainConfig train;
  CheckpointConfig checkpoint;
  GuardConfig guard;
  SupervisorConfig supervisor;
  SftConfig sft;
  GrpoConfig grpo;
  std::string out_dir;  // run directory: checkpoints, metrics.jsonl
};

RunConfig parse_run_config(const std::string& text, const std::string& source);
RunConfig load_run_config(const std::string& path);
// The configuration as TOML with every key spelled out; parse_run_config reads it back to the
// same values. Checkpoints store this, so a run's overrides travel with it.
std::string run_config_toml(const RunConfig& cfg);

}  // namespace tandem
