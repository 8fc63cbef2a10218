// resolve_launch and local_address_towards.
#include "tandem/dist/launch.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "tandem/core/error.h"
#include "tandem/dist/rendezvous.h"

namespace tandem {
namespace {

const char* env(const char* k) {
  const char* v = std::getenv(k);
  return v && *v ? v : nullptr;
}

int as_int(const char* name, const char* v, int lo) {
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end || x < lo || x > 1 << 20)
    fail("[dist] " + std::string(name) + " = '" + v + "' is not an integer >= " + std::to_string(lo));
  return (int)x;
}

}  // namespace

LaunchSpec resolve_launch(int nproc, int nnodes, int node_rank, const std::string& rdzv) {
  LaunchSpec s;
  s.rdzv = rdzv;
  // One process per rank, started by a launcher.
  struct Conv {
    const char *rank, *size, *what;
  };
  const Conv convs[] = {{"RANK", "WORLD_SIZE", "torchrun environment (RANK, WORLD_SIZE)"},
                        {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI environment"},
                        {"SLURM_PROCID", "SLURM_NTASKS", "Slurm environment"}};
  if (nnodes < 0 && node_rank < 0) {
    for (const Conv& c : convs) {
      if (!env(c.rank) || !env(c.size)) continue;
      s.nnodes = as_int(c.size, env(c.size), 1);
      s.node_rank = as_int(c.rank, env(c.rank), 0);
      s.source = c.what;
      break;
    }
    if (!s.source.empty() && s.rdzv.empty() && env("MASTER_ADDR") && env("MASTER_PORT"))
      s.rdzv = std::string(env("MASTER_ADDR")) + ":" + env("MASTER_PORT");
  }
  if (nnodes >= 0) s.nnodes = nnodes, s.source = "--nnodes";
  if (node_rank >= 0) s.node_rank = node_rank;
  if (nproc >= 0) {
    if (nproc < 1) fail("[dist] --nproc " + std::to_string(nproc) + ": need at least 1 rank");
    s.nproc = nproc;
    if (s.source.empty()) s.source = "--nproc";
  }
  if (s.nnodes < 1) fail("[dist] --nnodes " + std::to_string(s.nnodes) + ": need at least 1");
  if (s.node_rank < 0 || s.node_rank >= s.nnodes)
    fail("[dist] node rank " + std::to_string(s.node_rank) + " is outside 0.." +
         std::to_string(s.nnodes - 1) + " (" + (s.source.empty() ? "--node-rank" : s.source) + ")");
  if (s.nnodes > 1 && s.rdzv.empty())
    fail("[dist] " + std::to_string(s.nnodes) + " nodes need a rendezvous address: --rdzv HOST:PORT "
         "(or MASTER_ADDR and MASTER_PORT), the same on every node");
  if (!s.rdzv.empty()) parse_host_port(s.rdzv, "rendezvous address");
  return s;
}

std::string local_address_towards(const std::string& host, int port) {
  addrinfo hints = {}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res)
    fail("[dist] cannot resolve the rendezvous host '" + host + "'");
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  std::string out = "127.0.0.1";
  // A UDP connect sends nothing; it only picks the route, and with it our address.
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_in me = {};
    socklen_t len = sizeof me;
    if (::getsockname(fd, (sockaddr*)&me, &len) == 0) {
      char buf[INET_ADDRSTRLEN];
      if (::inet_ntop(AF_INET, &me.sin_addr, buf, sizeof buf)) out = buf;
    }
  }
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(res);
  return out;
}

}  // namespace tandem
