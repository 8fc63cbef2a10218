// Shared helpers for the training, inference and CLI tests: per-test temp dirs, a generated
// corpus and prepared dataset, tiny run configs, file bytes and metrics.jsonl readers.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../common/test_util.h"
#include "tandem/data/prepare.h"
#include "tandem/ckpt/config.h"

namespace tandem::test {

// The dataset's vocabulary; >= 260 (3 special ids + 256 byte pieces + merges).
constexpr int kVocab = 384;

// `lines` deterministic English-like sentences with a strong, learnable structure (a small
// word set in mostly fixed phrases), so a tiny model's loss falls visibly within ~40 steps.
inline std::string make_corpus(int lines, uint64_t seed = 11) {
  static const char* subjects[] = {"the king",     "the people", "the man", "moses",
                                   "the children", "the lord",   "a woman", "the city"};
  static const char* verbs[] = {"went up to",  "came unto", "spake unto",
                                "looked upon", "dwelt in",  "built"};
  static const char* objects[] = {"the house", "the river",  "the mountain", "the land of egypt",
                                  "the gate",  "the temple", "jerusalem",    "the great sea"};
  static const char* tails[] = {"in those days", "and it was good", "for ever", "as it is written",
                                "that same night"};
  uint64_t s = seed;
  auto next = [&](int n) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((s >> 33) % static_cast<uint64_t>(n));
  };
  std::string out;
  for (int i = 0; i < lines; ++i) {
    std::string line =
        std::string(subjects[next(8)]) + " " + verbs[next(6)] + " " + objects[next(8)];
    if (next(3) == 0) line += std::string(", ") + tails[next(5)];
    line += next(4) == 0 ? ", and " + std::string(subjects[next(8)]) + " " + verbs[next(6)] + " " +
                               objects[next(8)] + "."
                         : ".";
    line[0] = static_cast<char>(line[0] - 'a' + 'A');
    out += line + "\n";
  }
  return out;
}

// Writes a corpus to dir/corpus.txt and prepares dir/ds (vocab kVocab) quietly.
inline std::string prepare_tiny_dataset(const TempDir& dir, int lines = 400) {
  write_text(dir.file("corpus.txt"), make_corpus(lines));
  PrepareOptions o;
  o.input_files = {dir.file("corpus.txt")};
  o.out_dir = dir.file("ds");
  o.vocab_size = kVocab;
  o.val_fraction = 0.1;
  o.quiet = true;
  prepare_dataset(o);
  return o.out_dir;
}

struct TinyRun {
  std::string data_dir, out_dir;
  int64_t max_steps = 12;
  int checkpoint_every = 4;
  int keep_checkpoints = 0;
  int grad_accum = 1;
  int vocab_size = kVocab;
  uint64_t seed = 1337;
  double lr = 3e-3;
  int eval_every = 4;
};

// The TOML text of a tiny run (dim 48, 2 layers, GQA, context 32) on 2 threads.
inline std::string tiny_config_text(const TinyRun& r) {
  std::ostringstream t;
  t << "[model]\n"
       "dim = 48\nn_layers = 2\nn_heads = 4\nn_kv_heads = 2\nhidden_dim = 96\n"
    << "vocab_size = " << r.vocab_size << "\ncontext = 32\ntie_embeddings = true\n\n"
    << "[data]\ndir = \"" << r.data_dir << "\"\n\n"
    << "[train]\nbatch_size = 4\nseq_len = 32\n"
    << "grad_accum = " << r.grad_accum << "\n"
    << "max_steps = " << r.max_steps << "\n"
    << "lr = " << r.lr << "\nmin_lr = " << r.lr / 10 << "\nwarmup_steps = 2\n"
    << "weight_decay = 0.1\ngrad_clip = 1.0\n"
    << "eval_every = " << r.eval_every << "\neval_batches = 2\n"
    << "log_every = 1\nseed = " << r.seed << "\nthreads = 2\n\n"
    << "[checkpoint]\nevery_steps = " << r.checkpoint_every << "\nevery_seconds = 0\n"
    << "keep_last = " << r.keep_checkpoints << "\n\n"
    << "[run]\nout_dir = \"" << r.out_dir << "\"\n";
  return t.str();
}

inline RunConfig tiny_config(const TinyRun& r) {
  return parse_run_config(tiny_config_text(r), r.out_dir + ".toml");
}

// Every record of a metrics.jsonl, in order.
inline std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_bytes(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// (step, loss) of the training records, and (step, val_loss) of the evaluations.
inline std::vector<std::pair<int64_t, double>> metric_series(const std::string& path,
                                                             const char* field) {
  std::vector<std::pair<int64_t, double>> out;
  for (const auto& j : read_metrics(path))
    if (j.contains(field)) out.emplace_back(j["step"].get<int64_t>(), j[field].get<double>());
  return out;
}

// A test fixture with a prepared tiny dataset; run(name) is a TinyRun writing to dir/name.
class TinyRunTest : public ::testing::Test {
 protected:
  void SetUp() override { data_ = prepare_tiny_dataset(dir_); }
  TinyRun run(const std::string& name) {
    TinyRun r;
    r.data_dir = data_;
    r.out_dir = dir_.file(name);
    return r;
  }
  TempDir dir_;
  std::string data_;
};


}  // namespace tandem::test
