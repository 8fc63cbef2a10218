// Gloo's functional collectives with Tandem's deadline and abort. Gloo has no abort of its
// own, so each collective runs on the communicator's own thread, on its own copies of the
// buffers: the caller waits for it, for abort() or for the deadline, whichever comes first. An
// aborted collective is left to fail in that thread (its peers gone or its deadline passed);
// the thread owns the context and buffers it uses, so nothing the caller holds is touched.
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
#include <condition_variable>
#include <functional>
#include <thread>
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

// What the communicator's thread shares with it; kept alive by the thread after an abort.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::function<void()> job;
  bool has_job = false, done = false, quit = false;
  std::exception_ptr err;
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> ctx;
  std::vector<char> a, b;  // the collective's buffers

  void loop() {
    std::unique_lock<std::mutex> g(mu);
    for (;;) {
      cv.wait(g, [&] { return has_job || quit; });
      if (quit) return;
      auto f = std::move(job);
      has_job = false;
      g.unlock();
      std::exception_ptr e;
      try {
        f();
      } catch (...) {
        e = std::current_exception();
      }
      g.lock();
      err = e;
      done = true;
      cv.notify_all();
    }
  }
};

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<KvStore> kv, const std::string& prefix, int rank, int size,
                   const std::string& host, std::chrono::milliseconds timeout)
      : ch_(std::make_shared<Channel>()), rank_(rank), size_(size), host_(host) {
    set_timeout(timeout);
    gloo::transport::tcp::attr attr;
    attr.hostname = host;
    try {
      ch_->device = gloo::transport::tcp::CreateDevice(attr);
      GlooStore base(std::move(kv), timeout);
      gloo::rendezvous::PrefixStore store(prefix, base);
      ch_->ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
      ch_->ctx->setTimeout(timeout);
      ch_->ctx->connectFullMesh(store, ch_->device);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw CommError(CommError::Kind::kPeerLost,
                      "[dist] rank " + std::to_string(rank) + " could not connect to the other " +
                          std::to_string(size - 1) + " ranks on " + host + ": " + e.what());
    }
    std::shared_ptr<Channel> ch = ch_;
    thread_ = std::thread([ch] { ch->loop(); });
  }

  ~GlooCommunicator() override {
    bool busy;
    {
      std::lock_guard<std::mutex> g(ch_->mu);
      busy = in_flight_;
      ch_->quit = true;
    }
    ch_->cv.notify_all();
    // A collective still running was aborted: its thread ends when it fails, on its own.
    if (busy)
      thread_.detach();
    else
      thread_.join();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override {
    return "gloo " + std::to_string(GLOO_VERSION_MAJOR) + "." + std::to_string(GLOO_VERSION_MINOR) +
           "." + std::to_string(GLOO_VERSION_PATCH) + " (tcp, " + host_ + ")";
  }

  void all_reduce(void* buf, size_t n, CommType t, CommOp op) override {
    const size_t bytes = n * comm_type_size(t);
    if (size_ == 1 || n == 0) return check_open("all-reduce");
    run("all-reduce", buf, bytes, nullptr, 0, [t, op, n, tag = next_tag(), to = timeout()](Channel& c) {
      gloo::AllreduceOptions o(c.ctx);
      switch (t) {
        case CommType::kF32: o.setOutput(reinterpret_cast<float*>(c.a.data()), n); break;
        case CommType::kF64: o.setOutput(reinterpret_cast<double*>(c.a.data()), n); break;
        case CommType::kI64: o.setOutput(reinterpret_cast<int64_t*>(c.a.data()), n); break;
      }
      o.setReduceFunction(reduce_fn(t, op));
      o.setTag(tag);
      o.setTimeout(to);
      gloo::allreduce(o);
    });
  }

  void reduce_scatter(const void* in, void* out, const std::vector<size_t>& counts, CommType t,
                      CommOp op) override {
    // A full all-reduce, then this rank's block: Gloo's functional API has no reduce-scatter.
    size_t total = 0, off = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      if ((int)i < rank_) off += counts[i];
      total += counts[i];
    }
    const size_t es = comm_type_size(t);
    std::vector<char> scratch(total * es);
    std::memcpy(scratch.data(), in, total * es);
    all_reduce(scratch.data(), total, t, op);
    std::memcpy(out, scratch.data() + off * es, counts[(size_t)rank_] * es);
  }

  void all_gather(const void* in, void* out, size_t n, CommType t) override {
    const size_t bytes = n * comm_type_size(t);
    if (size_ == 1) {
      check_open("all-gather");
      std::memmove(out, in, bytes);
      return;
    }
    std::memcpy(ch_buf_in(bytes), in, bytes);
    run("all-gather", out, bytes * (size_t)size_, in, bytes,
        [bytes, size = size_, tag = next_tag(), to = timeout()](Channel& c) {
          gloo::AllgatherOptions o(c.ctx);
          o.setInput(c.b.data(), bytes);
          o.setOutput(c.a.data(), bytes * (size_t)size);
          o.setTag(tag);
          o.setTimeout(to);
          gloo::allgather(o);
        });
  }

  void broadcast(void* buf, size_t n, CommType t, int root) override {
    const size_t bytes = n * comm_type_size(t);
    if (size_ == 1 || n == 0) return check_open("broadcast");
    run("broadcast", buf, bytes, nullptr, 0, [bytes, root, tag = next_tag(), to = timeout()](Channel& c) {
      gloo::BroadcastOptions o(c.ctx);
      o.setOutput(c.a.data(), bytes);
      o.setRoot(root);
      o.setTag(tag);
      o.setTimeout(to);
      gloo::broadcast(o);
    });
  }

  void barrier() override {
    if (size_ == 1) return check_open("barrier");
    run("barrier", nullptr, 0, nullptr, 0, [tag = next_tag(), to = timeout()](Channel& c) {
      gloo::BarrierOptions o(c.ctx);
      o.setTag(tag);
      o.setTimeout(to);
      gloo::barrier(o);
    });
  }

  void abort() override {
    {
      std::lock_guard<std::mutex> g(ch_->mu);
      aborted_ = true;
    }
    ch_->cv.notify_all();
  }
  bool aborted() const override { return aborted_; }

 private:
  void check_open(const char* what) {
    if (aborted_)
      throw CommError(CommError::Kind::kAborted,
                      std::string("[dist] ") + what + ": the communicator was aborted");
  }
  char* ch_buf_in(size_t bytes) {
    std::lock_guard<std::mutex> g(ch_->mu);
    ch_->b.resize(bytes);
    return ch_->b.data();
  }

  // Runs `f` on the communicator's thread with ch_->a holding `bytes` of `buf` (in and out;
  // `in` already copied to ch_->b by the caller where the collective has a separate input).
  template <typename F>
  void run(const char* what, void* buf, size_t bytes, const void* in, size_t in_bytes, F f) {
    (void)in;
    (void)in_bytes;
    const auto began = std::chrono::steady_clock::now();
    auto waited = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    };
    std::unique_lock<std::mutex> g(ch_->mu);
    if (aborted_)
      throw CommError(CommError::Kind::kAborted,
                      std::string("[dist] ") + what + ": the communicator was aborted");
    ch_->a.resize(bytes);
    if (buf && bytes && what != std::string("all-gather")) std::memcpy(ch_->a.data(), buf, bytes);
    Channel* c = ch_.get();
    ch_->job = [c, f] { f(*c); };
    ch_->has_job = true;
    ch_->done = false;
    in_flight_ = true;
    ch_->cv.notify_all();
    // Gloo's own deadline ends the collective at timeout(); a little more covers its waking.
    const auto deadline = std::chrono::steady_clock::now() + timeout() + std::chrono::seconds(5);
    const bool ended = ch_->cv.wait_until(g, deadline, [&] { return ch_->done || aborted_; });
    if (!ch_->done) {
      aborted_ = true;  // the thread is still inside Gloo: nothing more goes through it
      throw CommError(ended ? CommError::Kind::kAborted : CommError::Kind::kTimeout,
                      std::string("[dist] rank ") + std::to_string(rank_) + ": " + what +
                          (ended ? " aborted" : " timed out after " +
                                                    std::to_string(timeout().count()) + " ms"),
                      waited());
    }
    in_flight_ = false;
    if (ch_->err) {
      std::string why;
      try {
        std::rethrow_exception(ch_->err);
      } catch (const std::exception& e) {
        why = e.what();
      }
      const bool timed_out = why.find("imed out") != std::string::npos ||
                             why.find("imeout") != std::string::npos;
      const CommError::Kind k = timed_out ? CommError::Kind::kTimeout : CommError::Kind::kPeerLost;
      aborted_ = true;  // the connections are in an unknown state
      throw CommError(k, std::string("[dist] rank ") + std::to_string(rank_) + ": " + what +
                             (timed_out ? " timed out after " + std::to_string(timeout().count()) + " ms"
                                        : " lost a peer") +
                             " (" + why + ")",
                     waited());
    }
    if (buf && bytes) std::memcpy(buf, ch_->a.data(), bytes);
  }
  uint32_t next_tag() { return tag_++; }

  std::shared_ptr<Channel> ch_;
  std::thread thread_;
  int rank_, size_;
  std::string host_;
  std::atomic<bool> aborted_{false};
  bool in_flight_ = false;  // guarded by ch_->mu
  uint32_t tag_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_gloo_communicator(std::shared_ptr<KvStore> store,
                                                     const std::string& prefix, int rank,
                                                     int size, const std::string& host,
                                                     std::chrono::milliseconds timeout) {
  return std::make_unique<GlooCommunicator>(std::move(store), prefix, rank, size, host, timeout);
}

}  // namespace tandem
