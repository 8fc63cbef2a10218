// Shard writing (atomic) and reading (mmap + header validation + optional checksum pass).
#include "tandem/data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/hash.h"

namespace tandem {

// The format is little-endian; on such hosts tokens are memcpy'd without byte swapping.
static_assert(std::endian::native == std::endian::little, "shard I/O assumes a little-endian host");

namespace {

// Header field offsets; see docs/shard-format.md.
constexpr size_t kOffVersion = 8, kOffDtype = 12, kOffCount = 16, kOffVocab = 24, kOffReserved = 28,
                 kOffSha = 32;

template <typename T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
void store(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

std::string to_hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = digits[p[i] >> 4];
    s[2 * i + 1] = digits[p[i] & 15];
  }
  return s;
}

[[noreturn]] void shard_fail(const std::string& path, const std::string& why) {
  fail("[shard] " + path + ": " + why);
}

void from_hex(const std::string& hex, char* out) {
  auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i < hex.size() / 2; ++i) {
    out[i] = static_cast<char>((nib(hex[2 * i]) << 4) | nib(hex[2 * i + 1]));
  }
}

}  // namespace

uint32_t shard_dtype_bytes(uint32_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

std::string write_shard(const std::string& path, std::span<const int32_t> tokens,
                        uint32_t vocab_size) {
  if (vocab_size == 0) fail("[shard] " + path + ": vocab_size must be positive");
  const uint32_t width = shard_dtype_bytes(vocab_size);
  std::string buf(kShardHeaderBytes + tokens.size() * width, '\0');
  char* payload = buf.data() + kShardHeaderBytes;
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t t = tokens[i];
    if (t < 0 || static_cast<uint32_t>(t) >= vocab_size) {
      fail("[shard] " + path + ": token " + std::to_string(t) + " at index " + std::to_string(i) +
           " is outside [0, " + std::to_string(vocab_size) + ")");
    }
    if (width == 2) {
      store(payload + 2 * i, static_cast<uint16_t>(t));
    } else {
      store(payload + 4 * i, static_cast<uint32_t>(t));
    }
  }
  std::string sha = sha256_hex(payload, tokens.size() * width);
  std::memcpy(buf.data(), kShardMagic, 8);
  store(buf.data() + kOffVersion, kShardVersion);
  store(buf.data() + kOffDtype, width);
  store(buf.data() + kOffCount, static_cast<uint64_t>(tokens.size()));
  store(buf.data() + kOffVocab, vocab_size);
  store(buf.data() + kOffReserved, uint32_t{0});
  from_hex(sha, buf.data() + kOffSha);
  atomic_write_file(path, buf);
  return sha;
}

ShardReader::ShardReader(const std::string& path, bool verify_checksum) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) shard_fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    shard_fail(path, "not a regular file");
  }
  const auto file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    shard_fail(path, "file is " + std::to_string(file_bytes) + " bytes, shorter than the " +
                         std::to_string(kShardHeaderBytes) +
                         "-byte shard header (truncated or not a shard)");
  }
  void* m = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (m == MAP_FAILED) shard_fail(path, std::string("mmap failed: ") + std::strerror(err));
  map_ = m;
  map_bytes_ = file_bytes;
  // From here on the destructor of a partially built object will not run; unmap on error.
  try {
    const auto* h = static_cast<const unsigned char*>(map_);
    if (std::memcmp(h, kShardMagic, 8) != 0) {
      shard_fail(path, "bad magic: expected \"TNDMSHRD\"; this is not a Tandem token shard");
    }
    uint32_t version = load<uint32_t>(h + kOffVersion);
    if (version != kShardVersion) {
      shard_fail(path, "unsupported format version " + std::to_string(version) +
                           " (this build reads " + std::to_string(kShardVersion) + ")");
    }
    dtype_bytes_ = load<uint32_t>(h + kOffDtype);
    if (dtype_bytes_ != 2 && dtype_bytes_ != 4) {
      shard_fail(path, "unknown token dtype code " + std::to_string(dtype_bytes_) +
                           " (expected 2 for uint16 or 4 for uint32)");
    }
    uint64_t count = load<uint64_t>(h + kOffCount);
    vocab_size_ = load<uint32_t>(h + kOffVocab);
    if (vocab_size_ == 0 || (dtype_bytes_ == 2 && vocab_size_ > 65536)) {
      shard_fail(path, "vocab size " + std::to_string(vocab_size_) +
                           " does not fit token dtype uint" + std::to_string(8 * dtype_bytes_));
    }
    const uint64_t payload_bytes = file_bytes - kShardHeaderBytes;
    if (count > payload_bytes / dtype_bytes_ || count * dtype_bytes_ != payload_bytes) {
      shard_fail(path, "header promises " + std::to_string(count) + " tokens (" +
                           std::to_string(count * dtype_bytes_ + kShardHeaderBytes) +
                           " bytes) but the file is " + std::to_string(file_bytes) +
                           " bytes; it is truncated or was not fully written");
    }
    count_ = static_cast<int64_t>(count);
    payload_ = h + kShardHeaderBytes;
    sha256_ = to_hex(h + kOffSha, 32);
    if (verify_checksum) {
      std::string actual = sha256_hex(payload_, payload_bytes);
      if (actual != sha256_) {
        shard_fail(path, "payload checksum mismatch (header " + sha256_ + ", data " + actual +
                             "); the file is corrupt");
      }
      uint32_t max_id = 0;
      for (int64_t i = 0; i < count_; ++i) {
        uint32_t t =
            dtype_bytes_ == 2 ? load<uint16_t>(payload_ + 2 * i) : load<uint32_t>(payload_ + 4 * i);
        max_id = t > max_id ? t : max_id;
      }
      if (count_ > 0 && max_id >= vocab_size_) {
        shard_fail(path, "holds token id " + std::to_string(max_id) + " >= vocab size " +
                             std::to_string(vocab_size_));
      }
    }
  } catch (...) {
    unmap();
    throw;
  }
}

ShardReader::ShardReader(ShardReader&& o) noexcept { *this = std::move(o); }

ShardReader& ShardReader::operator=(ShardReader&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    sha256_ = std::move(o.sha256_);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    payload_ = std::exchange(o.payload_, nullptr);
    count_ = std::exchange(o.count_, 0);
    vocab_size_ = std::exchange(o.vocab_size_, 0);
    dtype_bytes_ = std::exchange(o.dtype_bytes_, 0);
  }
  return *this;
}

ShardReader::~ShardReader() { unmap(); }

void ShardReader::unmap() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  payload_ = nullptr;
}

int32_t ShardReader::token(int64_t i) const {
  TANDEM_CHECK(i >= 0 && i < count_, "token index out of range");
  return dtype_bytes_ == 2 ? static_cast<int32_t>(load<uint16_t>(payload_ + 2 * i))
                           : static_cast<int32_t>(load<uint32_t>(payload_ + 4 * i));
}

void ShardReader::copy(int64_t first, int64_t count, int32_t* out) const {
  TANDEM_CHECK(first >= 0 && count >= 0 && first + count <= count_, "token range out of range");
  if (dtype_bytes_ == 4) {
    std::memcpy(out, payload_ + 4 * first, static_cast<size_t>(count) * 4);
    return;
  }
  const unsigned char* p = payload_ + 2 * first;
  for (int64_t i = 0; i < count; ++i) out[i] = load<uint16_t>(p + 2 * i);
}

}  // namespace tandem
