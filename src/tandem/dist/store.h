// A key-value store for rendezvous: ranks publish their addresses (and the engine its own
// bootstrap data, e.g. NCCL's unique id) and wait for each other's. Implemented over TCP by
// the rendezvous server (rendezvous.h) and in memory for tests.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace tandem {

class KvStore {
 public:
  virtual ~KvStore() = default;
  virtual void set(const std::string& key, const std::vector<char>& value) = 0;
  // Blocks until the key exists; Error naming the key when `timeout` passes first.
  virtual std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout) = 0;
};

// An in-process store shared by threads (tests run several ranks in one process).
std::shared_ptr<KvStore> make_memory_store();

}  // namespace tandem
