// SnapshotStore: a file header and two seqlocked slots in one shared mapping.
#include "tandem/train/snapshot.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "tandem/backend/backend.h"
#include "tandem/core/error.h"

namespace tandem {

namespace {
constexpr uint64_t kMagic = 0x50414e534d444e54ull;  // "TNDMSNAP"
constexpr size_t kHeaderBytes = 4096;
constexpr size_t kMetaCap = (1u << 20) - kHeaderBytes;  // JSON metadata per slot

struct FileHeader {
  uint64_t magic;
  uint64_t n_floats;
  uint64_t slot_bytes;
};

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
}  // namespace

struct SnapshotStore::SlotHeader {
  std::atomic<uint64_t> seq;  // odd while being written
  uint64_t generation;        // increases with every save; the newest complete slot wins
  uint64_t meta_len;
};

int inherited_snapshot_fd() {
  const char* s = std::getenv("TANDEM_SNAPSHOT_FD");
  if (!s || !*s) return -1;
  int fd = std::atoi(s);
  struct stat st;
  return fd >= 0 && ::fstat(fd, &st) == 0 ? fd : -1;
}

SnapshotStore::SnapshotStore(int fd, size_t n_floats) : n_(n_floats) {
  slot_bytes_ = round_up(kHeaderBytes + kMetaCap + 3 * n_ * sizeof(float), 4096);
  bytes_ = kHeaderBytes + 2 * slot_bytes_;
  bool fresh = true;
  if (fd >= 0) {
    struct stat st;
    if (::fstat(fd, &st) != 0) fail(std::string("[snapshot] fstat: ") + std::strerror(errno));
    if ((size_t)st.st_size != bytes_ && ::ftruncate(fd, 0) == 0 && ::ftruncate(fd, bytes_) != 0)
      fail(std::string("[snapshot] cannot size the shared snapshot: ") + std::strerror(errno));
    void* m = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) fail(std::string("[snapshot] mmap: ") + std::strerror(errno));
    base_ = static_cast<char*>(m);
    auto* h = reinterpret_cast<FileHeader*>(base_);
    fresh = !(h->magic == kMagic && h->n_floats == n_ && h->slot_bytes == slot_bytes_);
  } else {
    void* m = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail(std::string("[snapshot] mmap: ") + std::strerror(errno));
    base_ = static_cast<char*>(m);
  }
  if (fresh) {
    std::memset(base_, 0, kHeaderBytes);
    for (int i = 0; i < 2; ++i) std::memset(static_cast<void*>(slot(i)), 0, kHeaderBytes);
    auto* h = reinterpret_cast<FileHeader*>(base_);
    h->n_floats = n_;
    h->slot_bytes = slot_bytes_;
    std::atomic_thread_fence(std::memory_order_release);
    h->magic = kMagic;
  }
}

SnapshotStore::~SnapshotStore() {
  if (base_) ::munmap(base_, bytes_);
}

SnapshotStore::SlotHeader* SnapshotStore::slot(int i) const {
  return reinterpret_cast<SlotHeader*>(base_ + kHeaderBytes + (size_t)i * slot_bytes_);
}

int SnapshotStore::newest() const {
  int best = -1;
  for (int i = 0; i < 2; ++i) {
    const SlotHeader* s = slot(i);
    uint64_t seq = s->seq.load(std::memory_order_acquire);
    if (seq == 0 || (seq & 1)) continue;
    if (best < 0 || s->generation > slot(best)->generation) best = i;
  }
  return best;
}

void SnapshotStore::save(Backend& be, const float* p, const float* m, const float* v,
                         const std::string& meta) {
  if (meta.size() > kMetaCap) fail("[snapshot] trainer state too large for the snapshot");
  const int cur = newest();
  const int target = cur == 0 ? 1 : 0;
  const uint64_t gen = cur < 0 ? 1 : slot(cur)->generation + 1;
  SlotHeader* s = slot(target);
  s->seq.store(s->seq.load() | 1, std::memory_order_release);  // odd: being written
  char* meta_area = reinterpret_cast<char*>(s) + kHeaderBytes;
  auto* data = reinterpret_cast<float*>(meta_area + kMetaCap);
  const size_t bytes = n_ * sizeof(float);
  be.to_host(data, p, bytes);
  be.to_host(data + n_, m, bytes);
  be.to_host(data + 2 * n_, v, bytes);
  std::memcpy(meta_area, meta.data(), meta.size());
  s->meta_len = meta.size();
  s->generation = gen;
  s->seq.store((s->seq.load() | 1) + 1, std::memory_order_release);  // even: complete
}

std::optional<std::string> SnapshotStore::latest_meta() const {
  int i = newest();
  if (i < 0) return std::nullopt;
  const SlotHeader* s = slot(i);
  return std::string(reinterpret_cast<const char*>(s) + kHeaderBytes, s->meta_len);
}

std::optional<std::string> SnapshotStore::restore(Backend& be, float* p, float* m,
                                                  float* v) const {
  int i = newest();
  if (i < 0) return std::nullopt;
  const SlotHeader* s = slot(i);
  const char* meta_area = reinterpret_cast<const char*>(s) + kHeaderBytes;
  const auto* data = reinterpret_cast<const float*>(meta_area + kMetaCap);
  const size_t bytes = n_ * sizeof(float);
  be.to_device(p, data, bytes);
  be.to_device(m, data + n_, bytes);
  be.to_device(v, data + 2 * n_, bytes);
  return std::string(meta_area, s->meta_len);
}

}  // namespace tandem
