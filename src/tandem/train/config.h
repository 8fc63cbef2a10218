// Run configuration read from a TOML file: [model], [data] and [train] tables. Every key is
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
  int64_t checkpoint_every = 200;  // steps; 0 saves only at the end
  int keep_checkpoints = 3;        // newest K kept; 0 keeps all
  int64_t log_every = 10;
  uint64_t seed = 1337;
  int threads = 0;  // 0 = all cores
  std::string backend = "cpu";
};

struct RunConfig {
  std::string source;  // the file it came from
  std::string text;    // the file's text, stored in checkpoints
  ModelConfig model;
  std::string data_dir;  // a prepared dataset (tokenizer.model, train.bin, val.bin)
  TrainConfig train;
  std::string out_dir;  // run directory: checkpoints, metrics.jsonl
};

RunConfig parse_run_config(const std::string& text, const std::string& source);
RunConfig load_run_config(const std::string& path);
// The configuration as TOML with every key spelled out; parse_run_config reads it back to the
// same values. Checkpoints store this, so a run's overrides travel with it.
std::string run_config_toml(const RunConfig& cfg);

}  // namespace tandem
