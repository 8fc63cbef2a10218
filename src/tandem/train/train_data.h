// Where a run's batches come from: random windows of the prepared shards (pre-training), or
// the labelled examples of [sft] (fine-tuning). Either way sample i is a pure function of
// (seed, i), so the data cursor is one count.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "tandem/ckpt/config.h"
#include "tandem/data/loader.h"
#include "tandem/data/sft.h"
#include "tandem/data/shard.h"

namespace tandem {

class Tokenizer;

class TrainData {
 public:
  // Throws "[train] ..." / "[sft] ..." naming the shard or file that does not fit the model.
  TrainData(const RunConfig& cfg, const Tokenizer& tok);
  // B rows (train.batch_size) for samples first .. first + B - 1.
  // `doc_start` (B x T) is filled when packed() (SFT with sft.pack).
  void fill_train(int64_t first_sample, int32_t* inputs, int32_t* targets,
                  int32_t* doc_start = nullptr) const;
  bool packed() const { return sft_train_ && sft_train_->packed(); }
  bool has_val() const { return val_ != nullptr || sft_val_.has_value(); }
  // Evaluation: batches of B rows (SFT: every held-out example once, the last batch padded
  // with empty rows).
  int val_batches() const;
  void fill_val(int64_t batch, int32_t* inputs, int32_t* targets) const;
  bool sft() const { return sft_train_.has_value(); }
  // What ranks of a data-parallel run must share (file digests of the data they read).
  std::string train_path() const;

 private:
  const RunConfig& cfg_;
  std::unique_ptr<ShardReader> train_shard_, val_shard_;
  std::unique_ptr<BatchLoader> train_, val_;
  std::optional<SftLoader> sft_train_, sft_val_;
};

}  // namespace tandem
