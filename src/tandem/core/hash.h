// SHA-256 of byte ranges and files, as lowercase hex (checkpoint and shard checksums).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tandem {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  std::string hex();  // finalizes

 private:
  void* ctx_;
};

std::string sha256_hex(const void* data, size_t n);
std::string sha256_file(const std::string& path);

}  // namespace tandem
