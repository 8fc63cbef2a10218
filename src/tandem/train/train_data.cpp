// TrainData (see train_data.h).
#include "tandem/train/train_data.h"

#include <algorithm>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/data/tokenizer.h"

namespace tandem {
namespace {
// Validation draws from its own seed so it never shares windows with training order.
constexpr uint64_t kValSeedXor = 0x76616c6964ull;
}  // namespace

TrainData::TrainData(const RunConfig& cfg, const Tokenizer& tok) : cfg_(cfg) {
  const TrainConfig& tc = cfg.train;
  if (cfg.sft.enabled) {
    SftOptions o;
    o.loss_on = cfg.sft.loss_on;
    o.seq_len = tc.seq_len;
    sft_train_.emplace(load_sft_examples(cfg.sft.train, tok, o), tc.batch_size, tc.seq_len,
                       tc.seed, cfg.sft.pack);
    if (!cfg.sft.val.empty() && tc.eval_every > 0)
      sft_val_.emplace(load_sft_examples(cfg.sft.val, tok, o), tc.batch_size, tc.seq_len,
                       tc.seed ^ kValSeedXor);
    return;
  }
  if (cfg.grpo.enabled) return;  // GRPO's batches are rollouts (StepSource)
  train_shard_ = std::make_unique<ShardReader>(cfg.data_dir + "/train.bin");
  val_shard_ = std::make_unique<ShardReader>(cfg.data_dir + "/val.bin");
  for (const ShardReader* s : {train_shard_.get(), val_shard_.get()})
    if ((int)s->vocab_size() != cfg.model.vocab_size)
      fail("[train] shard " + s->path() + " was tokenized with a vocabulary of " +
           std::to_string(s->vocab_size()) + ", model.vocab_size is " +
           std::to_string(cfg.model.vocab_size));
  train_ = std::make_unique<BatchLoader>(*train_shard_, tc.batch_size, tc.seq_len, tc.seed);
  // Validation needs a val shard only when it runs (a dataset may hold out nothing).
  if (tc.eval_every > 0)
    val_ = std::make_unique<BatchLoader>(*val_shard_, tc.batch_size, tc.seq_len,
                                         tc.seed ^ kValSeedXor);
}

void TrainData::fill_train(int64_t first, int32_t* inputs, int32_t* targets,
                           int32_t* doc_start) const {
  if (sft_train_)
    sft_train_->fill(first, inputs, targets, doc_start);
  else
    train_->fill(first, inputs, targets);
}

int TrainData::val_batches() const {
  const int B = cfg_.train.batch_size;
  if (sft_val_) return (int)((sft_val_->size() + (size_t)B - 1) / (size_t)B);
  return cfg_.train.eval_batches;
}

void TrainData::fill_val(int64_t batch, int32_t* inputs, int32_t* targets) const {
  const int B = cfg_.train.batch_size, T = cfg_.train.seq_len;
  if (!sft_val_) return val_->fill(batch * B, inputs, targets);
  for (int b = 0; b < B; ++b) {
    const size_t i = (size_t)(batch * B + b);
    int32_t* in = inputs + (size_t)b * T;
    int32_t* tg = targets + (size_t)b * T;
    if (i < sft_val_->size()) {
      sft_val_->fill_example(i, in, tg);
    } else {  // past the last example: a row that counts for nothing
      std::fill(in, in + T, 0);
      std::fill(tg, tg + T, -1);
    }
  }
}

std::string TrainData::train_path() const {
  return cfg_.sft.enabled ? cfg_.sft.train : cfg_.data_dir + "/train.bin";
}

}  // namespace tandem
