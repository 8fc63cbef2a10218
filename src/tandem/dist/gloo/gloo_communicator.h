// The CPU ranks' communicator on Gloo's TCP transport.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "tandem/dist/communicator.h"
#include "tandem/dist/store.h"

namespace tandem {

// Connects a full mesh of `size` ranks through `store` (keys under `prefix`, so a re-formed
// group never reads an older one's addresses). `host` is the address this rank listens on
// (an address the other ranks can reach; "127.0.0.1" for one machine).
std::unique_ptr<Communicator> make_gloo_communicator(std::shared_ptr<KvStore> store,
                                                     const std::string& prefix, int rank,
                                                     int size, const std::string& host,
                                                     std::chrono::milliseconds timeout);

}  // namespace tandem
