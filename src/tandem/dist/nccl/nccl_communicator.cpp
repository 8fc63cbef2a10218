// NCCL behind the Communicator interface. The communicator is non-blocking and every wait is a
// poll, so a deadline or an abort() from another thread ends any call in bounded time.
#include "tandem/dist/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "tandem/core/error.h"

namespace tandem {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void cuda_failed(const char* call, cudaError_t e, int device) {
  fail(std::string("[nccl] ") + call + " on device " + std::to_string(device) + ": " +
       cudaGetErrorString(e));
}

void cuda_check(cudaError_t e, const char* call, int device) {
  if (e != cudaSuccess) cuda_failed(call, e, device);
}

ncclDataType_t nccl_type(CommType t) {
  switch (t) {
    case CommType::kF32:
      return ncclFloat32;
    case CommType::kF64:
      return ncclFloat64;
    case CommType::kI64:
      return ncclInt64;
  }
  fail("[nccl] unknown element type " + std::to_string(static_cast<int>(t)));
}

ncclRedOp_t nccl_op(CommOp op) {
  switch (op) {
    case CommOp::kSum:
      return ncclSum;
    case CommOp::kMax:
      return ncclMax;
  }
  fail("[nccl] unknown reduction " + std::to_string(static_cast<int>(op)));
}

// Short waits (a small all-reduce) are answered within microseconds; long ones must not burn
// a core that the data loader or the backend could use.
void backoff(int polls) {
  if (polls < 1000)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(50));
}

std::chrono::milliseconds remaining(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return std::max(left, std::chrono::milliseconds(1));
}

// The comm and its stream live on one device; the calling thread may have another current.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device), prev_(device) {
    cuda_check(cudaGetDevice(&prev_), "cudaGetDevice", device);
    if (prev_ != device_) cuda_check(cudaSetDevice(device_), "cudaSetDevice", device_);
  }
  ~DeviceGuard() {
    if (prev_ != device_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int prev_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(int rank, int size, int device) : rank_(rank), size_(size), device_(device) {}
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // Not in the constructor: if it throws, the destructor still releases what was made.
  void open(KvStore& store, const std::string& prefix, std::chrono::milliseconds timeout);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override { return engine_; }

  void all_reduce(void* buf, size_t n, CommType t, CommOp op) override;
  void reduce_scatter(const void* in, void* out, const std::vector<size_t>& counts, CommType t,
                      CommOp op) override;
  void all_gather(const void* in, void* out, size_t n, CommType t) override;
  void broadcast(void* buf, size_t n, CommType t, int root) override;
  void barrier() override;

  void abort() override;
  bool aborted() const override { return aborted_.load(std::memory_order_acquire); }

 private:
  template <typename Enqueue>
  void run(const char* what, Enqueue&& enqueue);
  void wait_locked(const char* what, Clock::time_point deadline, bool on_stream);
  [[noreturn]] void nccl_failed_locked(const char* what, ncclResult_t r);
  [[noreturn]] void throw_aborted_locked(const char* what);
  void abort_comm_locked(const std::string& reason);
  void close_comm_locked();
  std::string where(const char* what) const {
    return std::string("[nccl] ") + what + " (rank " + std::to_string(rank_) + " of " +
           std::to_string(size_) + ")";
  }

  const int rank_;
  const int size_;
  const int device_;
  std::string engine_;
  cudaStream_t stream_ = nullptr;
  int64_t* barrier_buf_ = nullptr;  // (1) the barrier's all-reduce operand, always 0

  // Held across every use of comm_, so abort() can never free it under a call in flight; a
  // call polls aborted_ and lets go within one poll.
  std::mutex mu_;
  ncclComm_t comm_ = nullptr;  // null once aborted
  std::string abort_reason_;   // the first cause, for the kAborted messages of later calls
  std::atomic<bool> aborted_{false};
};

void NcclCommunicator::open(KvStore& store, const std::string& prefix,
                            std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  set_timeout(timeout);
  std::lock_guard<std::mutex> lock(mu_);
  DeviceGuard device(device_);

  // A default (not cudaStreamNonBlocking) stream on purpose: it is ordered after the legacy
  // default stream, where the CUDA backend's kernels write the buffers we are handed.
  cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate", device_);
  cuda_check(cudaMalloc(reinterpret_cast<void**>(&barrier_buf_), sizeof(int64_t)), "cudaMalloc",
             device_);
  cuda_check(cudaMemset(barrier_buf_, 0, sizeof(int64_t)), "cudaMemset", device_);

  int v = 0;
  ncclResult_t r = ncclGetVersion(&v);
  if (r != ncclSuccess) fail(std::string("[nccl] ncclGetVersion: ") + ncclGetErrorString(r));
  engine_ = "nccl " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
            std::to_string(v % 100) + " (device " + std::to_string(device_) + ")";

  ncclUniqueId id;
  const std::string key = prefix + "nccl_id";
  if (rank_ == 0) {
    r = ncclGetUniqueId(&id);
    if (r != ncclSuccess)
      fail(where("init") + ": ncclGetUniqueId: " + ncclGetErrorString(r) + ": " +
           ncclGetLastError(nullptr));
    store.set(key, std::vector<char>(id.internal, id.internal + sizeof id.internal));
  } else {
    std::vector<char> bytes;
    try {
      bytes = store.get(key, remaining(deadline));
    } catch (const Error& e) {
      // Rank 0 never published: to training that is a missing member, like any other.
      throw CommError(CommError::Kind::kTimeout,
                      where("init") + ": no NCCL id from rank 0: " + e.what());
    }
    if (bytes.size() != sizeof id.internal)
      fail(where("init") + ": the NCCL id under '" + key + "' has " + std::to_string(bytes.size()) +
           " bytes, expected " + std::to_string(sizeof id.internal));
    std::memcpy(id.internal, bytes.data(), sizeof id.internal);
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every NCCL call returns at once; we poll with our own deadline
  r = ncclCommInitRankConfig(&comm_, size_, id, rank_, &config);
  if (r != ncclSuccess && r != ncclInProgress) nccl_failed_locked("init", r);
  wait_locked("init", deadline, /*on_stream=*/false);
}

NcclCommunicator::~NcclCommunicator() {
  std::lock_guard<std::mutex> lock(mu_);
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
  if (prev != device_) cudaSetDevice(device_);
  if (comm_) close_comm_locked();
  if (barrier_buf_) cudaFree(barrier_buf_);
  if (stream_) cudaStreamDestroy(stream_);
  if (prev >= 0 && prev != device_) cudaSetDevice(prev);
}

// Finalize flushes outstanding work and waits until the group is quiescent, which involves the
// peers; a dead peer must not hang the destructor, so the wait is bounded and then we abort.
void NcclCommunicator::close_comm_locked() {
  ncclResult_t state = ncclCommFinalize(comm_);
  const Clock::time_point deadline = Clock::now() + timeout();
  for (int polls = 0; state == ncclInProgress && Clock::now() < deadline; ++polls) {
    if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) state = ncclInternalError;
    if (state == ncclInProgress) backoff(polls);
  }
  if (state == ncclSuccess)
    ncclCommDestroy(comm_);
  else
    ncclCommAbort(comm_);
  comm_ = nullptr;
}

void NcclCommunicator::abort() {
  // First the flag, so a call in flight sees it at its next poll and lets go of mu_.
  aborted_.store(true, std::memory_order_release);
  std::lock_guard<std::mutex> lock(mu_);
  abort_comm_locked("abort() was called");
}

void NcclCommunicator::abort_comm_locked(const std::string& reason) {
  if (abort_reason_.empty()) abort_reason_ = reason;
  aborted_.store(true, std::memory_order_release);
  if (comm_) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
}

void NcclCommunicator::throw_aborted_locked(const char* what) {
  abort_comm_locked("abort() was called");
  throw CommError(CommError::Kind::kAborted,
                  where(what) + ": the communicator was aborted (" + abort_reason_ + ")");
}

void NcclCommunicator::nccl_failed_locked(const char* what, ncclResult_t r) {
  // Read NCCL's detail before the abort, which may replace it.
  std::string detail = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm_);
  if (last && *last) detail += std::string(": ") + last;
  abort_comm_locked(std::string(what) + " failed");
  const std::string msg = where(what) + ": " + detail + "; communicator aborted";
  if (r == ncclInvalidArgument || r == ncclInvalidUsage) fail(msg);  // our bug, not a peer's
  throw CommError(CommError::Kind::kPeerLost, msg);
}

// Done when NCCL has finished enqueuing (its state leaves ncclInProgress: until then the stream
// may look idle) and, for collectives, the stream has drained.
void NcclCommunicator::wait_locked(const char* what, Clock::time_point deadline, bool on_stream) {
  for (int polls = 0;; ++polls) {
    if (aborted_.load(std::memory_order_acquire)) throw_aborted_locked(what);
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
    if (r != ncclSuccess) nccl_failed_locked(what, r);
    if (state != ncclSuccess && state != ncclInProgress) nccl_failed_locked(what, state);
    if (state == ncclSuccess) {
      if (!on_stream) return;
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) {
        abort_comm_locked(std::string(what) + " failed");
        cuda_failed("cudaStreamQuery", e, device_);
      }
    }
    if (Clock::now() >= deadline) {
      abort_comm_locked(std::string(what) + " timed out");
      throw CommError(CommError::Kind::kTimeout, where(what) + ": not complete within " +
                                                     std::to_string(timeout().count()) +
                                                     " ms; communicator aborted");
    }
    backoff(polls);
  }
}

template <typename Enqueue>
void NcclCommunicator::run(const char* what, Enqueue&& enqueue) {
  const Clock::time_point deadline = Clock::now() + timeout();
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_.load(std::memory_order_acquire)) throw_aborted_locked(what);
  DeviceGuard device(device_);
  const ncclResult_t r = enqueue();
  if (r != ncclSuccess && r != ncclInProgress) nccl_failed_locked(what, r);
  wait_locked(what, deadline, /*on_stream=*/true);
}

void NcclCommunicator::all_reduce(void* buf, size_t n, CommType t, CommOp op) {
  const ncclDataType_t type = nccl_type(t);
  const ncclRedOp_t redop = nccl_op(op);
  run("all_reduce", [&] {
    return n == 0 ? ncclSuccess : ncclAllReduce(buf, buf, n, type, redop, comm_, stream_);
  });
}

void NcclCommunicator::reduce_scatter(const void* in, void* out, const std::vector<size_t>& counts,
                                      CommType t, CommOp op) {
  if (counts.size() != static_cast<size_t>(size_))
    fail(where("reduce_scatter") + ": " + std::to_string(counts.size()) + " counts for " +
         std::to_string(size_) + " ranks");
  const bool equal =
      std::all_of(counts.begin(), counts.end(), [&](size_t c) { return c == counts[0]; });
  const size_t elem = comm_type_size(t);
  // Mapped before the group opens: a throw inside it would leave this thread's group open.
  const ncclDataType_t type = nccl_type(t);
  const ncclRedOp_t redop = nccl_op(op);
  run("reduce_scatter", [&]() -> ncclResult_t {
    if (equal)
      return counts[0] == 0 ? ncclSuccess
                            : ncclReduceScatter(in, out, counts[0], type, redop, comm_, stream_);
    // NCCL has no reduce-scatter with uneven blocks: one reduce per block, rooted at its owner,
    // in one group so they progress together. Non-roots never write recvbuff.
    ncclResult_t r = ncclGroupStart();
    if (r != ncclSuccess) return r;
    ncclResult_t first = ncclSuccess;
    const char* block = static_cast<const char*>(in);
    for (int b = 0; b < size_; ++b) {
      if (counts[b] != 0 && first == ncclSuccess) {
        r = ncclReduce(block, out, counts[b], type, redop, b, comm_, stream_);
        if (r != ncclSuccess && r != ncclInProgress) first = r;
      }
      block += counts[b] * elem;
    }
    // Always close the group (it is per thread); on a non-blocking comm this may return
    // ncclInProgress, and the wait that follows completes it.
    r = ncclGroupEnd();
    return first != ncclSuccess ? first : r;
  });
}

void NcclCommunicator::all_gather(const void* in, void* out, size_t n, CommType t) {
  const ncclDataType_t type = nccl_type(t);
  run("all_gather",
      [&] { return n == 0 ? ncclSuccess : ncclAllGather(in, out, n, type, comm_, stream_); });
}

void NcclCommunicator::broadcast(void* buf, size_t n, CommType t, int root) {
  if (root < 0 || root >= size_)
    fail(where("broadcast") + ": root " + std::to_string(root) + " is not a rank");
  const ncclDataType_t type = nccl_type(t);
  run("broadcast", [&] {
    return n == 0 ? ncclSuccess : ncclBroadcast(buf, buf, n, type, root, comm_, stream_);
  });
}

void NcclCommunicator::barrier() {
  run("barrier", [&] {
    return ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclInt64, ncclSum, comm_, stream_);
  });
}

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(KvStore& store, const std::string& prefix,
                                                     int rank, int size, int cuda_device,
                                                     std::chrono::milliseconds timeout) {
  if (size < 1 || rank < 0 || rank >= size)
    fail("[nccl] rank " + std::to_string(rank) + " of " + std::to_string(size) +
         ": expected 0 <= rank < size");
  if (cuda_device < 0) fail("[nccl] device " + std::to_string(cuda_device) + " is not a device");
  if (timeout.count() <= 0)
    fail("[nccl] timeout of " + std::to_string(timeout.count()) + " ms: expected > 0");
  auto comm = std::make_unique<NcclCommunicator>(rank, size, cuda_device);
  comm->open(store, prefix, timeout);
  return comm;
}

}  // namespace tandem
