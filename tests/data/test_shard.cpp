// Shard format tests: round trips in both token widths, and rejection of truncated,
// corrupted and foreign files with messages that name the file.
#include <gtest/gtest.h>

#include <fstream>

#include "data_test_util.h"
#include "tandem/core/fs.h"
#include "tandem/data/shard.h"

namespace tandem {
namespace {

using test::error_of;
using test::TempDir;

std::vector<int32_t> pattern(size_t n, uint32_t vocab) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 2654435761u + 17) % vocab);
  return t;
}

void flip_byte(const std::string& path, size_t offset) {
  std::string bytes = read_file(path);
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x01);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

void round_trip(uint32_t vocab, uint32_t expect_width) {
  TempDir dir;
  std::string path = dir.file("s.bin");
  auto tokens = pattern(1000, vocab);
  tokens[3] = static_cast<int32_t>(vocab - 1);  // the largest id must survive the width
  std::string sha = write_shard(path, tokens, vocab);
  EXPECT_EQ(std::filesystem::file_size(path), kShardHeaderBytes + tokens.size() * expect_width);

  ShardReader r(path);
  EXPECT_EQ(r.size(), 1000);
  EXPECT_EQ(r.vocab_size(), vocab);
  EXPECT_EQ(r.dtype_bytes(), expect_width);
  EXPECT_EQ(r.payload_sha256(), sha);
  for (int64_t i = 0; i < r.size(); ++i) ASSERT_EQ(r.token(i), tokens[i]) << i;
  std::vector<int32_t> out(100);
  r.copy(450, 100, out.data());
  EXPECT_EQ(out, std::vector<int32_t>(tokens.begin() + 450, tokens.begin() + 550));
}

TEST(Shard, RoundTripsUint16) { round_trip(50000, 2); }
TEST(Shard, RoundTripsUint16AtLimit) { round_trip(65536, 2); }
TEST(Shard, RoundTripsUint32) { round_trip(100000, 4); }

TEST(Shard, EmptyShardRoundTrips) {
  TempDir dir;
  write_shard(dir.file("e.bin"), {}, 300);
  ShardReader r(dir.file("e.bin"));
  EXPECT_EQ(r.size(), 0);
  EXPECT_EQ(r.vocab_size(), 300u);
}

TEST(Shard, RejectsTruncatedFile) {
  TempDir dir;
  std::string path = dir.file("t.bin");
  write_shard(path, pattern(100, 1000), 1000);
  std::filesystem::resize_file(path, kShardHeaderBytes + 199);
  std::string msg = error_of([&] { ShardReader r(path); });
  EXPECT_TRUE(msg.starts_with("[shard] " + path)) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  std::filesystem::resize_file(path, 10);  // not even a header
  msg = error_of([&] { ShardReader r(path, /*verify_checksum=*/false); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("header"), std::string::npos) << msg;
}

TEST(Shard, DetectsFlippedPayloadByte) {
  TempDir dir;
  std::string path = dir.file("c.bin");
  write_shard(path, pattern(100, 1000), 1000);
  flip_byte(path, kShardHeaderBytes + 77);
  std::string msg = error_of([&] { ShardReader r(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  ShardReader unchecked(path, /*verify_checksum=*/false);  // only the checksum notices
  EXPECT_EQ(unchecked.size(), 100);
}

TEST(Shard, RejectsBadMagicAndVersion) {
  TempDir dir;
  std::string path = dir.file("m.bin");
  write_shard(path, pattern(10, 1000), 1000);
  flip_byte(path, 0);
  std::string msg = error_of([&] { ShardReader r(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("magic"), std::string::npos) << msg;

  write_shard(path, pattern(10, 1000), 1000);
  flip_byte(path, 8 + 1);  // version 1 -> 257
  msg = error_of([&] { ShardReader r(path); });
  EXPECT_NE(msg.find("version 257"), std::string::npos) << msg;
}

TEST(Shard, WriteRejectsOutOfRangeTokensAndLeavesNoFile) {
  TempDir dir;
  std::vector<int32_t> tokens = {1, 2, 1000};
  std::string msg = error_of([&] { write_shard(dir.file("x.bin"), tokens, 1000); });
  EXPECT_NE(msg.find("1000"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.bin")));
}

TEST(Shard, ReaderIsMovable) {
  TempDir dir;
  write_shard(dir.file("v.bin"), pattern(64, 500), 500);
  ShardReader a(dir.file("v.bin"));
  ShardReader b(std::move(a));
  EXPECT_EQ(b.size(), 64);
  EXPECT_EQ(b.token(5), pattern(64, 500)[5]);
  ShardReader c(dir.file("v.bin"));
  c = std::move(b);
  EXPECT_EQ(c.token(63), pattern(64, 500)[63]);
}

}  // namespace
}  // namespace tandem
