// Where a `tandem train` sits in a data-parallel job: from its flags (--nproc, --nnodes,
// --node-rank, --rdzv) or from the environment the usual launchers set (torchrun's RANK /
// WORLD_SIZE / MASTER_ADDR / MASTER_PORT, Slurm's SLURM_PROCID / SLURM_NTASKS, Open MPI's
// OMPI_COMM_WORLD_*). A launcher that starts one process per rank makes each process a
// "node" of one rank.
#pragma once

#include <string>

namespace tandem {

struct LaunchSpec {
  int nnodes = 1, node_rank = 0, nproc = 1;  // ranks = nnodes * nproc
  std::string rdzv;    // HOST:PORT of the rendezvous (node 0 serves it); "" = 127.0.0.1, any port
  std::string source;  // where the layout came from, for messages: "--nproc", "torchrun env" ...
  int world() const { return nnodes * nproc; }
  bool distributed() const { return world() > 1; }
};

// Flags < 0 / empty are unset. Errors name the flag or variable that is wrong.
LaunchSpec resolve_launch(int nproc, int nnodes, int node_rank, const std::string& rdzv);

// The address of this machine on the route to `host` (what other machines can reach it at).
std::string local_address_towards(const std::string& host, int port);

}  // namespace tandem
