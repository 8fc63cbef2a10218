// Data parallelism for one training process: its place in the group (set by the supervisor
// in the environment), the group's formation at the rendezvous, the step's exact gradient
// reduction over the global batch's shards, and the state every rank starts a group from.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tandem/dist/background.h"
#include "tandem/dist/communicator.h"
#include "tandem/dist/exact_sum.h"
#include "tandem/dist/rendezvous.h"
#include "tandem/model/llama.h"
#include "tandem/ckpt/config.h"

namespace tandem {

struct RankEnv {
  int rank = 0, world = 1;              // the rank's place (its order at the rendezvous)
  int local_rank = 0, local_world = 1;  // on this machine (threads split the cores)
  std::string rdzv;                     // HOST:PORT of the rendezvous server; "" = one rank
  std::string host = "127.0.0.1";       // the address this rank's engine listens on
  double timeout_s = 30;                // deadline of every collective
  double join_timeout_s = 480;          // for every rank to reach the rendezvous
  bool distributed() const { return !rdzv.empty(); }
};
RankEnv rank_env_from_environment();   // TANDEM_DIST_* (set by the supervisor)
void export_rank_env(const RankEnv& e);  // sets TANDEM_DIST_* for a child process

// What ranks must share: the config (without paths), the tokenizer and data, the binary.
Fingerprint run_fingerprint(const RunConfig& cfg, const std::string& tokenizer_sha256);

// The formed group of a distributed run, or a group of one.
class RankGroup {
 public:
  RankGroup() = default;
  // Joins at the rendezvous and connects the engine (Gloo).
  RankGroup(const RankEnv& env, const Fingerprint& fp);
  int rank() const { return comm_ ? comm_->rank() : 0; }
  int world() const { return comm_ ? comm_->size() : 1; }
  bool writer() const { return rank() == 0; }
  Communicator* comm() const { return comm_.get(); }
  int64_t generation() const { return generation_; }
  std::string describe() const;
  // Sums slot vectors in which each slot was filled by exactly one rank (the others hold
  // zero): exact whatever the engine's order.
  void sum_slots(std::vector<double>& v) const;
  // Every rank ends with the state of the rank whose state is newest (a rank's `step` is -1
  // when it has none); returns that step. `tensors` gives host arrays of n floats each holding
  // this rank's state; it is called only when some rank is behind (a restart where every rank
  // kept the same step copies nothing).
  int64_t share_state(int64_t step, const std::function<std::vector<float*>()>& tensors, size_t n,
                      std::string& meta) const;
  // The ranks whose `fingerprint` differs from the one most ranks have (empty: all agree; with
  // two ranks that differ, both).
  std::vector<int> diverged(const std::string& fingerprint) const;

  // What the ranks decide together at the end of a step: each rank's verdict on it (0: good;
  // the guard rejected it otherwise), and whether the group re-forms after it because ranks
  // wait at the rendezvous to join (rank 0 asks the server once a second, in the background).
  struct Agreement {
    std::vector<int> verdicts;  // by rank
    bool regroup = false;
  };
  Agreement agree(int my_verdict) const;
  // Rank 0 asks the rendezvous now instead of at its next poll.
  void check_growth_now();

 private:
  struct Watch;
  std::shared_ptr<RendezvousClient> rdzv_;
  std::unique_ptr<Communicator> comm_;
  std::shared_ptr<Watch> watch_;
  int64_t generation_ = 0;
};

// The step's gradient over `shards` micro-batches, of which this rank computes a contiguous
// block. With one shard there is nothing to sum (the backward's own accumulation is exact);
// with more, shard gradients are summed in fixed point (ExactGradSum), so the step's bits are
// the same at any world size.
class GradReducer {
 public:
  GradReducer(Llama& model, int shards, const RankGroup& group);
  int first_shard() const { return first_; }
  int my_shards() const { return count_; }
  bool exact() const { return shards_ > 1 && !plain_; }
  // Benchmarks only (TANDEM_DIST_PLAIN_SUM=1): a float all-reduce in the engine's order, to
  // measure what the exact sum costs; its bits depend on the world size.
  bool plain() const { return plain_; }
  // Whether buckets are reduced during the backward (TANDEM_DIST_OVERLAP=0 turns it off, to
  // measure what the overlap hides).
  bool overlaps() const { return overlap_; }

  void begin();
  // For the backward of global shard `shard`: a hook that reduces each block's gradient over
  // the ranks as soon as the backward has finished it (the rank's last shard, exact sum, CPU
  // backend), overlapping the rest of the backward; null when the shard is reduced in finish().
  std::function<void(int)> ready_hook(int shard);
  // After the backward of global shard `shard` (its gradient alone in model.grads()).
  void add_shard(int shard, double loss_sum);
  // Sums over ranks into model.grads(). False: a tensor's gradient left the fixed-point
  // window; the exponents were refitted and the step must be computed again.
  bool finish();
  double loss_sum() const { return loss_; }  // the step's summed loss, over every shard

  const std::vector<int>& exponents() const { return sum_.exponents(); }
  void set_exponents(const std::vector<int>& e) { sum_.set_exponents(e); }
  double comm_seconds() const { return comm_s_; }  // time spent in collectives (total)
  // Seconds each rank spent computing its shards in the last step (begin() to finish(),
  // collectives excluded), by rank: what straggler detection compares.
  const std::vector<double>& rank_seconds() const { return rank_s_; }
  // Fault injection: flips bit `bit` of one value of this rank's gradient bucket in the next
  // finish(), before the sum (`which` picks the value).
  void flip_before_sum(int bit, uint64_t which) { flip_bit_ = bit, flip_which_ = which; }
  void set_comm_delay(double s) { delay_s_ = s; }   // fault injection: a slow link

 private:
  // The gradient where the host can read it: model.grads() on the CPU, else a copy in host_.
  float* host_grads();
  Llama& model_;
  const RankGroup& group_;
  int shards_, first_, count_;
  ExactGradSum sum_;
  std::vector<double> slots_;  // shard losses, then each rank's per-tensor maxima
  std::vector<float> host_;    // the gradient on the host, for a device backend
  double loss_ = 0, comm_s_ = 0;
  bool plain_ = false;
  double delay_s_ = 0;
  std::chrono::steady_clock::time_point began_;
  std::vector<double> rank_s_;
  // Overlap: each block's segment range (index l + 1 for block l of Llama::backward's hook),
  // its staging buffer, and the thread the buckets' collectives run on.
  bool overlap_ = false, hooked_ = false, step_hooked_ = false;
  std::vector<std::pair<size_t, size_t>> blocks_;
  std::vector<std::vector<int64_t>> staging_;
  std::unique_ptr<BackgroundCollectives> bg_;
  int flip_bit_ = -1;
  uint64_t flip_which_ = 0;
};

}  // namespace tandem
