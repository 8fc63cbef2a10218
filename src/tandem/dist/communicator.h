// The communicator: the few collectives data-parallel training needs, on an existing engine
// (Gloo for CPU ranks, NCCL for GPU ranks). Tandem owns rendezvous and membership (store.h,
// rendezvous.h); the engine only moves and reduces bytes. Every call has a deadline and can be
// aborted from another thread, so a dead or stuck peer is a CommError in bounded time, never
// a wait of the engine's default 30 minutes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tandem/core/error.h"

namespace tandem {

enum class CommType { kF32, kF64, kI64 };
enum class CommOp { kSum, kMax };
size_t comm_type_size(CommType t);

// A collective that did not complete: a peer died or disconnected, the deadline passed, or
// the communicator was aborted. For training this is a membership change, not a bug.
class CommError : public Error {
 public:
  enum class Kind { kTimeout, kPeerLost, kAborted };
  CommError(Kind kind, const std::string& msg, double waited_s = -1)
      : Error(msg), kind_(kind), waited_s_(waited_s) {}
  Kind kind() const { return kind_; }
  // How long the failed call waited before it failed (-1: unknown): for a hung peer, the
  // time it took to detect it.
  double waited_s() const { return waited_s_; }

 private:
  Kind kind_;
  double waited_s_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The engine and transport, e.g. "gloo 0.5.0 (tcp, lo)" or "nccl 2.21.5".
  virtual std::string engine() const = 0;

  // In place: buf (n elements) becomes the element-wise op over all ranks' buf.
  virtual void all_reduce(void* buf, size_t n, CommType t, CommOp op) = 0;
  // out (counts[rank] elements) becomes this rank's block of the reduction of in (the sum of
  // counts elements, blocks in rank order).
  virtual void reduce_scatter(const void* in, void* out, const std::vector<size_t>& counts,
                              CommType t, CommOp op) = 0;
  // out (size() * n elements) becomes every rank's in (n elements), in rank order.
  virtual void all_gather(const void* in, void* out, size_t n, CommType t) = 0;
  virtual void broadcast(void* buf, size_t n, CommType t, int root) = 0;
  virtual void barrier() = 0;

  // Thread-safe and idempotent: a call in flight and every later call throw CommError
  // (kAborted) promptly. The communicator cannot be used again; re-form the group instead.
  virtual void abort() = 0;
  virtual bool aborted() const = 0;

  // The deadline of every later call.
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 protected:
  std::chrono::milliseconds timeout_{std::chrono::seconds(30)};
};

}  // namespace tandem
