// The supervisor: `tandem train` runs the training process as its child and restarts it when
// it crashes (a signal or a non-zero exit) or hangs (no heartbeat within a timeout derived from
// the measured step time), with exponential backoff and a restart budget. Restarts resume from
// the newest state that verifies: the in-memory snapshot the supervisor keeps alive (a memfd
// the child inherits) or the newest disk checkpoint. SIGINT/SIGTERM stop the run cleanly.
#pragma once

#include <string>
#include <vector>

#include "tandem/dist/launch.h"
#include "tandem/ckpt/config.h"

namespace tandem {

// Runs `worker_argv` (argv[0] is ignored: the current executable is re-run) under supervision
// and returns the exit status for the whole run. With resume=false the first process starts a
// new run; every restart passes --resume.
// With a distributed `launch`, starts its nproc local ranks (and, on node 0, serves the
// rendezvous); any rank's failure stops and restarts this machine's ranks together.
int run_supervised(const RunConfig& cfg, std::vector<std::string> worker_argv, bool resume,
                   const LaunchSpec& launch = {});

}  // namespace tandem
