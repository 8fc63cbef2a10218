// Deterministic random training windows from a token shard: sample i is a pure function of
// (seed, i), so resuming needs only the count of samples already consumed.
#pragma once

#include <cstdint>

#include "tandem/data/shard.h"

namespace tandem {

class BatchLoader {
 public:
  // Keeps a reference to `shard`, which must outlive the loader. Throws "[data] ..." naming
  // the shard when it holds fewer than seq_len + 2 tokens.
  BatchLoader(const ShardReader& shard, int batch, int seq_len, uint64_t seed);

  // Fills rows for samples first_sample .. first_sample + batch - 1. Sample i takes the
  // seq_len + 1 tokens at window_offset(i): inputs get [0, T), targets get [1, T + 1).
  void fill(int64_t first_sample, int32_t* inputs /* (B, T) */,
            int32_t* targets /* (B, T) */) const;

  // rng_u64(seed, kStreamData, sample) % (size - seq_len - 1)
  int64_t window_offset(int64_t sample) const;

  int batch() const { return batch_; }
  int seq_len() const { return seq_len_; }
  uint64_t seed() const { return seed_; }

 private:
  const ShardReader* shard_;
  int batch_;
  int seq_len_;
  uint64_t seed_;
};

}  // namespace tandem
