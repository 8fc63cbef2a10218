// Gloo's functional collectives with Tandem's deadline and abort. Gloo has no abort of its
// own: abort() closes every connection of the context, which makes an operation blocked in
// another thread fail at once; the failure is then reported as kAborted.
#include "tandem/dist/gloo/gloo_communicator.h"

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/config.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace tandem {
namespace {

// Gloo's view of a Tandem store.
class GlooStore : public gloo::rendezvous::Store {
 public:
  GlooStore(std::shared_ptr<KvStore> kv, std::chrono::milliseconds timeout)
      : kv_(std::move(kv)), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override { kv_->set(key, data); }
  std::vector<char> get(const std::string& key) override { return kv_->get(key, timeout_); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& t) override {
    for (const auto& k : keys) kv_->get(k, t);
  }

 private:
  std::shared_ptr<KvStore> kv_;
  std::chrono::milliseconds timeout_;
};

template <typename T>
void sum_fn(void* c, const void* a, const void* b, size_t n) {
  T* out = static_cast<T*>(c);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = x[i] + y[i];
}
template <typename T>
void max_fn(void* c, const void* a, const void* b, size_t n) {
  T* out = static_cast<T*>(c);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = x[i] > y[i] ? x[i] : y[i];
}

gloo::AllreduceOptions::Func reduce_fn(CommType t, CommOp op) {
  const bool sum = op == CommOp::kSum;
  switch (t) {
    case CommType::kF32: return sum ? sum_fn<float> : max_fn<float>;
    case CommType::kF64: return sum ? sum_fn<double> : max_fn<double>;
    case CommType::kI64: return sum ? sum_fn<int64_t> : max_fn<int64_t>;
  }
  return nullptr;
}

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<KvStore> kv, const std::string& prefix, int rank, int size,
                   const std::string& host, std::chrono::milliseconds timeout) {
    set_timeout(timeout);
    gloo::transport::tcp::attr attr;
    attr.hostname = host;
    host_ = host;
    try {
      device_ = gloo::transport::tcp::CreateDevice(attr);
      GlooStore base(std::move(kv), timeout);
      gloo::rendezvous::PrefixStore store(prefix, base);
      ctx_ = std::make_shared<gloo::rendezvous::Context>(rank, size);
      ctx_->setTimeout(timeout);
      ctx_->connectFullMesh(store, device_);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw CommError(CommError::Kind::kPeerLost,
                      "[dist] rank " + std::to_string(rank) + " could not connect to the other " +
                          std::to_string(size - 1) + " ranks on " + host + ": " + e.what());
    }
  }
  ~GlooCommunicator() override = default;

  int rank() const override { return ctx_->rank; }
  int size() const override { return ctx_->size; }
  std::string engine() const override {
    return "gloo " + std::to_string(GLOO_VERSION_MAJOR) + "." + std::to_string(GLOO_VERSION_MINOR) +
           "." + std::to_string(GLOO_VERSION_PATCH) + " (tcp, " + host_ + ")";
  }

  void all_reduce(void* buf, size_t n, CommType t, CommOp op) override {
    run("all-reduce", [&] {
      if (size() == 1 || n == 0) return;
      gloo::AllreduceOptions o(ctx_);
      set_out(o, buf, n, t);
      o.setReduceFunction(reduce_fn(t, op));
      o.setTag(next_tag());
      o.setTimeout(timeout());
      gloo::allreduce(o);
    });
  }

  void reduce_scatter(const void* in, void* out, const std::vector<size_t>& counts, CommType t,
                      CommOp op) override {
    // A full all-reduce, then this rank's block: Gloo's functional API has no reduce-scatter.
    size_t total = 0, off = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      if ((int)i < rank()) off += counts[i];
      total += counts[i];
    }
    const size_t es = comm_type_size(t);
    scratch_.resize(total * es);
    std::memcpy(scratch_.data(), in, total * es);
    all_reduce(scratch_.data(), total, t, op);
    std::memcpy(out, scratch_.data() + off * es, counts[(size_t)rank()] * es);
  }

  void all_gather(const void* in, void* out, size_t n, CommType t) override {
    run("all-gather", [&] {
      const size_t bytes = n * comm_type_size(t);
      if (size() == 1) {
        std::memmove(out, in, bytes);
        return;
      }
      gloo::AllgatherOptions o(ctx_);
      o.setInput(const_cast<char*>(static_cast<const char*>(in)), bytes);
      o.setOutput(static_cast<char*>(out), bytes * (size_t)size());
      o.setTag(next_tag());
      o.setTimeout(timeout());
      gloo::allgather(o);
    });
  }

  void broadcast(void* buf, size_t n, CommType t, int root) override {
    run("broadcast", [&] {
      if (size() == 1 || n == 0) return;
      gloo::BroadcastOptions o(ctx_);
      o.setOutput(static_cast<char*>(buf), n * comm_type_size(t));
      o.setRoot(root);
      o.setTag(next_tag());
      o.setTimeout(timeout());
      gloo::broadcast(o);
    });
  }

  void barrier() override {
    run("barrier", [&] {
      if (size() == 1) return;
      gloo::BarrierOptions o(ctx_);
      o.setTag(next_tag());
      o.setTimeout(timeout());
      gloo::barrier(o);
    });
  }

  void abort() override {
    std::lock_guard<std::mutex> g(abort_mu_);
    if (aborted_.exchange(true)) return;
    try {
      ctx_->closeConnections();
    } catch (const std::exception&) {
      // already broken: the point was to end it
    }
  }
  bool aborted() const override { return aborted_; }

 private:
  template <typename F>
  void run(const char* what, F&& f) {
    if (aborted_)
      throw CommError(CommError::Kind::kAborted, std::string("[dist] ") + what +
                                                     ": the communicator was aborted");
    try {
      f();
    } catch (const gloo::IoException& e) {
      fail_with(what, e.what());
    } catch (const gloo::Exception& e) {
      fail_with(what, e.what());
    }
  }
  [[noreturn]] void fail_with(const char* what, const std::string& why) {
    const bool timed_out = why.find("imed out") != std::string::npos ||
                           why.find("imeout") != std::string::npos;
    CommError::Kind k = aborted_    ? CommError::Kind::kAborted
                        : timed_out ? CommError::Kind::kTimeout
                                    : CommError::Kind::kPeerLost;
    // The connections are in an unknown state now: nothing more goes through them.
    abort();
    throw CommError(k, std::string("[dist] rank ") + std::to_string(rank()) + ": " + what +
                           (k == CommError::Kind::kAborted    ? " aborted"
                            : k == CommError::Kind::kTimeout ? " timed out after " +
                                                                   std::to_string(timeout().count()) + " ms"
                                                             : " lost a peer") +
                           " (" + why + ")");
  }
  static void set_out(gloo::AllreduceOptions& o, void* buf, size_t n, CommType t) {
    switch (t) {
      case CommType::kF32: o.setOutput(static_cast<float*>(buf), n); break;
      case CommType::kF64: o.setOutput(static_cast<double*>(buf), n); break;
      case CommType::kI64: o.setOutput(static_cast<int64_t*>(buf), n); break;
    }
  }
  uint32_t next_tag() { return tag_++; }

  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> ctx_;
  std::string host_;
  std::atomic<bool> aborted_{false};
  std::mutex abort_mu_;
  uint32_t tag_ = 0;
  std::vector<char> scratch_;
};

}  // namespace

std::unique_ptr<Communicator> make_gloo_communicator(std::shared_ptr<KvStore> store,
                                                     const std::string& prefix, int rank,
                                                     int size, const std::string& host,
                                                     std::chrono::milliseconds timeout) {
  return std::make_unique<GlooCommunicator>(std::move(store), prefix, rank, size, host, timeout);
}

}  // namespace tandem
