// Random-window batch loader over one mmapped shard; allocation-free per batch.
#include "tandem/data/loader.h"

#include "tandem/core/error.h"
#include "tandem/core/rng.h"

namespace tandem {

BatchLoader::BatchLoader(const ShardReader& shard, int batch, int seq_len, uint64_t seed)
    : shard_(&shard), batch_(batch), seq_len_(seq_len), seed_(seed) {
  if (batch < 1 || seq_len < 1) {
    fail("[data] batch size and sequence length must be positive (got batch " +
         std::to_string(batch) + ", seq_len " + std::to_string(seq_len) + ")");
  }
  if (shard.size() < static_cast<int64_t>(seq_len) + 2) {
    fail("[data] " + shard.path() + ": shard holds " + std::to_string(shard.size()) +
         " tokens; seq_len " + std::to_string(seq_len) + " needs at least " +
         std::to_string(static_cast<int64_t>(seq_len) + 2));
  }
}

int64_t BatchLoader::window_offset(int64_t sample) const {
  const auto span = static_cast<uint64_t>(shard_->size() - seq_len_ - 1);
  return static_cast<int64_t>(rng_u64(seed_, kStreamData, static_cast<uint64_t>(sample)) % span);
}

void BatchLoader::fill(int64_t first_sample, int32_t* inputs, int32_t* targets) const {
  TANDEM_CHECK(first_sample >= 0, "negative sample index");
  for (int b = 0; b < batch_; ++b) {
    int64_t off = window_offset(first_sample + b);
    int64_t row = static_cast<int64_t>(b) * seq_len_;
    shard_->copy(off, seq_len_, inputs + row);
    shard_->copy(off + 1, seq_len_, targets + row);
  }
}

}  // namespace tandem
