// Rendezvous and membership, owned by Tandem: one server (in the launching process of node 0)
// and a client per rank. The server is a key-value store for the engine's bootstrap (Gloo's
// addresses, NCCL's id) and the keeper of the group: ranks join with a fingerprint of what
// they run (config, data, binary), and get a generation: a numbered group with a rank and a
// world size each. A rank whose fingerprint differs is refused with the difference named.
// Over HTTP (cpp-httplib): waits are long polls.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tandem/dist/store.h"

namespace tandem {

// What a rank runs. Ranks that differ in any field cannot train together.
struct Fingerprint {
  std::map<std::string, std::string> fields;  // e.g. {"config", sha256}, {"binary", sha256}
};

struct RendezvousOptions {
  std::string host = "127.0.0.1";  // address to listen on ("0.0.0.0": every interface)
  int port = 29500;                // 0: any free port (see RendezvousServer::port())
  int world = 1;                   // ranks that make a full group
  // Elastic: when fewer than `world` ranks have come and none has joined for `settle_s`, a
  // smaller group forms from the lowest ranks: the largest size >= min_world that divides
  // `divisor` (the global batch's shards), always with rank 0 in it. min_world 0: only full
  // groups.
  int min_world = 0;
  double settle_s = 5;
  int divisor = 1;
};

class RendezvousServer {
 public:
  // Binds at once: a port in use is an Error naming it.
  explicit RendezvousServer(const RendezvousOptions& o);
  ~RendezvousServer();
  int port() const;
  RendezvousServer(const RendezvousServer&) = delete;
  RendezvousServer& operator=(const RendezvousServer&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A rank's place in a formed group.
struct GroupInfo {
  int64_t generation = 0;
  int rank = 0, world = 1;
};

// The rank side: a KvStore over the server, plus joining.
class RendezvousClient : public KvStore {
 public:
  // "HOST:PORT". Connection problems surface on the first call, as an Error naming the address.
  explicit RendezvousClient(const std::string& address);
  ~RendezvousClient() override;
  void set(const std::string& key, const std::vector<char>& value) override;
  std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout) override;

  // Joins as the rank with `order` (its place: node_rank * nproc + local_rank) and waits for
  // the group. Error if the server refuses the fingerprint (naming the field that differs and
  // both values) or the group does not form within `timeout`.
  GroupInfo join(int order, const Fingerprint& fp, std::chrono::milliseconds timeout);
  // Whether ranks now waiting at the rendezvous would make a larger group than the running
  // one of `world` ranks (a machine that came back): the group re-forms at a step boundary.
  bool group_can_grow(int world);
  const std::string& address() const { return address_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string address_;
};

// Splits "HOST:PORT" (Error naming `what` on a malformed value).
std::pair<std::string, int> parse_host_port(const std::string& s, const std::string& what);

}  // namespace tandem
