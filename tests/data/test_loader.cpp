// Batch loader tests: windows are a pure function of (seed, sample index), targets are the
// inputs shifted by one, and short shards are refused.
#include <gtest/gtest.h>

#include "data_test_util.h"
#include "tandem/core/rng.h"
#include "tandem/data/loader.h"

namespace tandem {
namespace {

using test::error_of;
using test::TempDir;

// Token i is i % vocab, so a window's first token reveals its offset.
ShardReader counting_shard(const TempDir& dir, int n, uint32_t vocab = 60000) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>(i % vocab);
  write_shard(dir.file("c.bin"), t, vocab);
  return ShardReader(dir.file("c.bin"));
}

TEST(BatchLoader, TargetsAreInputsShiftedByOneAtTheDocumentedOffset) {
  TempDir dir;
  ShardReader shard = counting_shard(dir, 5000);
  const int B = 4, T = 16;
  BatchLoader loader(shard, B, T, 42);
  std::vector<int32_t> x(B * T), y(B * T);
  loader.fill(10, x.data(), y.data());
  for (int b = 0; b < B; ++b) {
    int64_t off = static_cast<int64_t>(rng_u64(42, kStreamData, 10 + b) % (5000 - T - 1));
    EXPECT_EQ(loader.window_offset(10 + b), off);
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(x[b * T + t], off + t);
      EXPECT_EQ(y[b * T + t], off + t + 1);
    }
  }
}

TEST(BatchLoader, IsDeterministicAndResumable) {
  TempDir dir;
  ShardReader shard = counting_shard(dir, 3000);
  const int B = 3, T = 8;
  BatchLoader a(shard, B, T, 7), b(shard, B, T, 7), other(shard, B, T, 8);
  std::vector<int32_t> xa(B * T), ya(B * T), xb(B * T), yb(B * T);
  a.fill(0, xa.data(), ya.data());
  b.fill(0, xb.data(), yb.data());
  EXPECT_EQ(xa, xb);
  EXPECT_EQ(ya, yb);
  other.fill(0, xb.data(), yb.data());
  EXPECT_NE(xa, xb);
  // Resuming at sample 1 reproduces rows 1.. of the batch that started at sample 0.
  a.fill(1, xb.data(), yb.data());
  EXPECT_TRUE(std::equal(xa.begin() + T, xa.end(), xb.begin()));
}

TEST(BatchLoader, OffsetsStayInRangeAndSpreadOut) {
  TempDir dir;
  ShardReader shard = counting_shard(dir, 200);
  const int T = 32;
  BatchLoader loader(shard, 1, T, 3);
  int64_t lo = 1 << 30, hi = -1;
  for (int64_t i = 0; i < 2000; ++i) {
    int64_t off = loader.window_offset(i);
    ASSERT_GE(off, 0);
    ASSERT_LE(off + T + 1, shard.size());
    lo = std::min(lo, off);
    hi = std::max(hi, off);
  }
  EXPECT_EQ(lo, 0);
  EXPECT_EQ(hi, 200 - T - 2);
}

TEST(BatchLoader, RejectsShardShorterThanSeqLenPlusTwo) {
  TempDir dir;
  ShardReader shard = counting_shard(dir, 17);
  std::string msg = error_of([&] { BatchLoader l(shard, 2, 16, 1); });
  EXPECT_NE(msg.find(dir.file("c.bin")), std::string::npos) << msg;
  EXPECT_NE(msg.find("17"), std::string::npos) << msg;
  EXPECT_NE(msg.find("18"), std::string::npos) << msg;
  BatchLoader ok(shard, 2, 15, 1);  // 15 + 2 = 17 tokens is enough
  std::vector<int32_t> x(30), y(30);
  ok.fill(0, x.data(), y.data());
  EXPECT_EQ(x[0], 0);  // the only valid offset
  EXPECT_EQ(y[14], 15);
}

}  // namespace
}  // namespace tandem
