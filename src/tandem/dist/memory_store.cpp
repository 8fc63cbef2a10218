// The in-process KvStore: a map under a mutex, waits on a condition variable.
#include <condition_variable>
#include <map>
#include <mutex>

#include "tandem/core/error.h"
#include "tandem/dist/store.h"

namespace tandem {
namespace {

class MemoryStore : public KvStore {
 public:
  void set(const std::string& key, const std::vector<char>& value) override {
    {
      std::lock_guard<std::mutex> g(mu_);
      kv_[key] = value;
    }
    cv_.notify_all();
  }
  std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> g(mu_);
    if (!cv_.wait_for(g, timeout, [&] { return kv_.count(key) > 0; }))
      fail("[rendezvous] key '" + key + "' did not appear within " +
           std::to_string(timeout.count()) + " ms");
    return kv_[key];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<char>> kv_;
};

}  // namespace

std::shared_ptr<KvStore> make_memory_store() { return std::make_shared<MemoryStore>(); }

}  // namespace tandem
