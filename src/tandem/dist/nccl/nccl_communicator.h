// The NCCL communicator: the collectives of communicator.h between GPU ranks, each with a
// deadline and an abort, built on NCCL's non-blocking communicators.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "tandem/dist/communicator.h"
#include "tandem/dist/store.h"

namespace tandem {

// Buffers passed to the collectives are device pointers on `cuda_device`. Rank 0 creates the
// ncclUniqueId and publishes it under key prefix + "nccl_id"; the others read it from the store.
// A prefix names one group: re-forming after an abort needs a fresh prefix, or a late rank
// could read the old id. `timeout` bounds the whole rendezvous and init (CommError kTimeout
// when it passes) and is the starting timeout() of every collective.
std::unique_ptr<Communicator> make_nccl_communicator(KvStore& store, const std::string& prefix,
                                                     int rank, int size, int cuda_device,
                                                     std::chrono::milliseconds timeout);

}  // namespace tandem
