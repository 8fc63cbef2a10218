// Binary token shards: a 64-byte header (magic, version, dtype, count, vocab, payload SHA-256)
// followed by little-endian tokens. Byte layout: docs/shard-format.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace tandem {

inline constexpr char kShardMagic[8] = {'T', 'N', 'D', 'M', 'S', 'H', 'R', 'D'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 64;

// Token width in bytes: 2 (uint16) when every id fits, i.e. vocab_size <= 65536, else 4.
uint32_t shard_dtype_bytes(uint32_t vocab_size);

// Writes `tokens` (each in [0, vocab_size)) to `path` atomically (temp file, fsync, rename).
// Returns the payload SHA-256 (hex), the same value the header holds.
std::string write_shard(const std::string& path, std::span<const int32_t> tokens,
                        uint32_t vocab_size);

// A read-only memory map of one shard, validated on open. Errors read "[shard] FILE: ...".
class ShardReader {
 public:
  // verify_checksum hashes the payload and checks every token is below vocab_size; it reads
  // the whole file, so callers that opened the same file moments ago may skip it.
  explicit ShardReader(const std::string& path, bool verify_checksum = true);
  ShardReader(ShardReader&& other) noexcept;
  ShardReader& operator=(ShardReader&& other) noexcept;
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;
  ~ShardReader();

  int64_t size() const { return count_; }  // tokens
  uint32_t vocab_size() const { return vocab_size_; }
  uint32_t dtype_bytes() const { return dtype_bytes_; }
  const std::string& path() const { return path_; }
  const std::string& payload_sha256() const { return sha256_; }  // from the header, hex

  int32_t token(int64_t i) const;  // checks 0 <= i < size()
  // Copies tokens [first, first + count) into out; checks the range.
  void copy(int64_t first, int64_t count, int32_t* out) const;

 private:
  void unmap();

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* payload_ = nullptr;
  int64_t count_ = 0;
  uint32_t vocab_size_ = 0;
  uint32_t dtype_bytes_ = 0;
  std::string sha256_;
};

}  // namespace tandem
