// Checkpoints: one directory per saved step (step-00001234/) holding model.safetensors (Hugging
// Face Llama names), optimizer.safetensors (AdamW moments), tokenizer.model and manifest.json
// (format version, step, config, tokenizer hash, RNG seed, data cursor, sha256 of every file).
// A checkpoint is written under a temporary name, fsynced and renamed: a directory without a
// verifying manifest does not exist as far as resume is concerned.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tandem/io/safetensors.h"
#include "tandem/model/params.h"

namespace tandem {

constexpr int kCheckpointFormat = 1;

struct CheckpointState {
  int64_t step = 0;              // optimizer steps completed
  int64_t samples_consumed = 0;  // data-loader cursor (training sequences drawn)
  uint64_t seed = 0;             // the run's RNG seed (all draws are counter-based)
  std::string config_text;       // the run's TOML config
  std::string tokenizer_sha256;
  std::string chat_template;     // Jinja, when the tokenizer has the chat format ("": none)
  nlohmann::json extra = nlohmann::json::object();  // trainer bookkeeping (e.g. skipped batches)
};

struct CheckpointData {
  std::string dir;
  CheckpointState state;
  std::vector<float> params;  // layout order
  std::vector<float> m, v;    // empty when the checkpoint has no optimizer state
};

std::string checkpoint_name(int64_t step);

// A checkpoint's model.safetensors (base = parameters, no prefix) or optimizer.safetensors
// (exp_avg. then exp_avg_sq. tensors) as its header bytes plus views of the host buffers, in
// file order: written and hashed without a copy.
struct StateFile {
  std::string header;
  std::vector<StView> tensors;
  std::vector<std::string_view> parts() const;
};
StateFile model_file(const ParamLayout& layout, const float* params);
StateFile optimizer_file(const ParamLayout& layout, const float* m, const float* v);

// Writes run_dir/step-XXXXXXXX atomically and returns its path. m and v may be null (weights
// only). tokenizer_path, if non-empty, is copied in. With m and v, the manifest's
// extra.fingerprint holds the SHA-256 of both state files (the same values `fingerprint`
// gives for the in-memory state). after_file, if set, runs after each file
// lands in the temporary directory (fault injection kills the process there).
std::string save_checkpoint(const std::string& run_dir, const CheckpointState& state,
                            const ParamLayout& layout, const float* params, const float* m,
                            const float* v, const std::string& tokenizer_path,
                            const std::function<void(const std::string&)>& after_file = {});

// Reads and fully verifies a checkpoint directory; throws Error naming the file that failed.
CheckpointData load_checkpoint(const std::string& dir, const ParamLayout& layout,
                               bool with_optimizer);
// Reads only the manifest, checked against the files' checksums (or, with verify_files false,
// only that every listed file exists).
nlohmann::json read_manifest(const std::string& dir, bool verify_files = true);

// Newest checkpoint in run_dir whose manifest and checksums verify. Each rejected candidate
// is reported in *rejected as the reason (which names the file) and in *rejected_dirs as its
// directory.
std::optional<std::string> latest_checkpoint(const std::string& run_dir,
                                             std::vector<std::string>* rejected,
                                             std::vector<std::string>* rejected_dirs = nullptr);

// Deletes step-XXXXXXXX.tmp-PID directories: saves that a crash interrupted. Call only when
// no other process writes checkpoints into run_dir.
void remove_stale_temporaries(const std::string& run_dir);

// Deletes complete checkpoints other than the newest `keep_last` and those whose step is a
// multiple of keep_every (keep_last <= 0 keeps all; keep_every <= 0 keeps no extra ones).
void prune_checkpoints(const std::string& run_dir, int keep_last, int64_t keep_every = 0);

// Moves a checkpoint that failed verification aside (DIR.rejected-TIME); never deletes it.
std::string set_aside(const std::string& dir);

}  // namespace tandem
