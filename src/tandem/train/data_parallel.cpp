// RankEnv, RankGroup and GradReducer (see data_parallel.h).
#include "tandem/train/data_parallel.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "tandem/core/error.h"
#include "tandem/core/hash.h"
#include "tandem/dist/gloo/gloo_communicator.h"
#include "tandem/train/faults.h"

namespace tandem {
namespace {

using Clock = std::chrono::steady_clock;

std::string env_or(const char* k, const std::string& d) {
  const char* v = std::getenv(k);
  return v && *v ? v : d;
}

// Size and the SHA-256 of the first and last MiB: enough to tell two datasets apart without
// reading gigabytes at every start.
std::string file_digest(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return "missing";
  std::fseek(f, 0, SEEK_END);
  const long size = std::ftell(f);
  const long chunk = std::min<long>(size, 1 << 20);
  std::vector<char> buf((size_t)chunk * 2);
  std::fseek(f, 0, SEEK_SET);
  size_t got = std::fread(buf.data(), 1, (size_t)chunk, f);
  std::fseek(f, size - chunk, SEEK_SET);
  got += std::fread(buf.data() + chunk, 1, (size_t)chunk, f);
  std::fclose(f);
  return std::to_string(size) + ":" + sha256_hex(buf.data(), got).substr(0, 16);
}

}  // namespace

RankEnv rank_env_from_environment() {
  RankEnv e;
  e.rdzv = env_or("TANDEM_DIST_RDZV", "");
  if (!e.distributed()) return e;
  e.rank = std::atoi(env_or("TANDEM_DIST_RANK", "0").c_str());
  e.world = std::atoi(env_or("TANDEM_DIST_WORLD", "1").c_str());
  e.local_rank = std::atoi(env_or("TANDEM_DIST_LOCAL_RANK", "0").c_str());
  e.local_world = std::atoi(env_or("TANDEM_DIST_LOCAL_WORLD", "1").c_str());
  e.host = env_or("TANDEM_DIST_HOST", "127.0.0.1");
  e.timeout_s = std::atof(env_or("TANDEM_DIST_TIMEOUT_S", "30").c_str());
  e.join_timeout_s = std::atof(env_or("TANDEM_DIST_JOIN_TIMEOUT_S", "480").c_str());
  return e;
}

void export_rank_env(const RankEnv& e) {
  ::setenv("TANDEM_DIST_RDZV", e.rdzv.c_str(), 1);
  ::setenv("TANDEM_DIST_RANK", std::to_string(e.rank).c_str(), 1);
  ::setenv("TANDEM_DIST_WORLD", std::to_string(e.world).c_str(), 1);
  ::setenv("TANDEM_DIST_LOCAL_RANK", std::to_string(e.local_rank).c_str(), 1);
  ::setenv("TANDEM_DIST_LOCAL_WORLD", std::to_string(e.local_world).c_str(), 1);
  ::setenv("TANDEM_DIST_HOST", e.host.c_str(), 1);
  ::setenv("TANDEM_DIST_TIMEOUT_S", std::to_string(e.timeout_s).c_str(), 1);
  ::setenv("TANDEM_DIST_JOIN_TIMEOUT_S", std::to_string(e.join_timeout_s).c_str(), 1);
}

Fingerprint run_fingerprint(const RunConfig& cfg, const std::string& tokenizer_sha256) {
  RunConfig c = cfg;
  c.out_dir.clear();  // machines may keep runs and data in different places
  c.data_dir.clear();
  c.sft.init.clear();
  c.sft.train.clear();
  c.sft.val.clear();
  c.train.threads = 0;
  Fingerprint fp;
  const std::string toml = run_config_toml(c);
  fp.fields["config"] = sha256_hex(toml.data(), toml.size()).substr(0, 16);
  fp.fields["tokenizer"] = tokenizer_sha256.substr(0, 16);
  fp.fields["training data"] =
      file_digest(cfg.sft.enabled ? cfg.sft.train : cfg.data_dir + "/train.bin");
  fp.fields["validation data"] =
      file_digest(cfg.sft.enabled ? cfg.sft.val : cfg.data_dir + "/val.bin");
  fp.fields["tandem binary"] = sha256_file("/proc/self/exe").substr(0, 16);
  return fp;
}

struct RankGroup::Watch {
  std::atomic<bool> stop{false}, grow{false};
  std::thread thread;
  ~Watch() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
};

RankGroup::RankGroup(const RankEnv& env, const Fingerprint& fp) {
  const auto timeout = std::chrono::milliseconds((int64_t)(env.timeout_s * 1000));
  rdzv_ = std::make_shared<RendezvousClient>(env.rdzv);
  // Joining waits for every rank to start: a longer deadline than one collective's.
  GroupInfo g = rdzv_->join(env.rank, fp,
                            std::chrono::milliseconds((int64_t)(env.join_timeout_s * 1000)));
  generation_ = g.generation;
  std::string prefix = "g";  // (built in steps: GCC 12 warns falsely on "g" + to_string())
  prefix += std::to_string(g.generation);
  prefix += "/";
  comm_ = make_gloo_communicator(rdzv_, prefix, g.rank, g.world, env.host, timeout);
  if (g.rank != 0) return;
  watch_ = std::make_shared<Watch>();
  Watch* w = watch_.get();
  w->thread = std::thread([w, client = rdzv_, world = g.world] {
    while (!w->stop && !w->grow) {
      for (int i = 0; i < 20 && !w->stop; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (!w->stop && client->group_can_grow(world)) w->grow = true;
    }
  });
}

void RankGroup::check_growth_now() {
  if (watch_ && rdzv_->group_can_grow(world())) watch_->grow = true;
}

RankGroup::Agreement RankGroup::agree(int my_verdict) const {
  Agreement a;
  if (!comm_) {
    a.verdicts = {my_verdict};
    return a;
  }
  std::vector<double> slots((size_t)world() + 1, 0.0);
  slots[(size_t)rank()] = my_verdict;
  if (watch_ && watch_->grow) slots[(size_t)world()] = 1;
  sum_slots(slots);
  for (int r = 0; r < world(); ++r) a.verdicts.push_back((int)slots[(size_t)r]);
  a.regroup = slots[(size_t)world()] > 0;
  return a;
}

std::string RankGroup::describe() const {
  if (!comm_) return "1 rank";
  return "rank " + std::to_string(rank()) + " of " + std::to_string(world()) + ", " +
         comm_->engine();
}

void RankGroup::sum_slots(std::vector<double>& v) const {
  if (comm_) comm_->all_reduce(v.data(), v.size(), CommType::kF64, CommOp::kSum);
}

int64_t RankGroup::share_state(int64_t step,
                               const std::function<std::vector<float*>()>& tensors, size_t n,
                               std::string& meta) const {
  if (!comm_) return step;
  std::vector<int64_t> steps((size_t)world());
  comm_->all_gather(&step, steps.data(), 1, CommType::kI64);
  const int src = (int)(std::max_element(steps.begin(), steps.end()) - steps.begin());
  if (steps[(size_t)src] < 0) return -1;  // nobody has state: all start from the seed
  // Replicas at the same step are equal (the fingerprint check holds them to it): nothing to
  // send when every rank already has the newest step.
  if (std::all_of(steps.begin(), steps.end(), [&](int64_t s) { return s == steps[(size_t)src]; }))
    return steps[(size_t)src];
  for (float* t : tensors()) comm_->broadcast(t, n, CommType::kF32, src);
  int64_t len = (int64_t)meta.size();
  comm_->broadcast(&len, 1, CommType::kI64, src);
  std::vector<int64_t> packed(((size_t)len + 7) / 8, 0);
  std::memcpy(packed.data(), meta.data(), rank() == src ? (size_t)len : 0);
  comm_->broadcast(packed.data(), packed.size(), CommType::kI64, src);
  meta.assign(reinterpret_cast<const char*>(packed.data()), (size_t)len);
  return steps[(size_t)src];
}

std::vector<int> RankGroup::diverged(const std::string& fingerprint) const {
  if (!comm_) return {};
  // 64 bytes of each rank's fingerprint, gathered as integers.
  std::vector<int64_t> mine(8, 0), all((size_t)world() * 8);
  std::memcpy(mine.data(), fingerprint.data(), std::min<size_t>(64, fingerprint.size()));
  comm_->all_gather(mine.data(), all.data(), 8, CommType::kI64);
  auto of = [&](int r) { return std::vector<int64_t>(all.begin() + r * 8, all.begin() + r * 8 + 8); };
  int best = 0, best_count = 0;
  for (int r = 0; r < world(); ++r) {
    int c = 0;
    for (int q = 0; q < world(); ++q) c += of(q) == of(r);
    if (c > best_count) best = r, best_count = c;
  }
  std::vector<int> odd;
  const bool majority = 2 * best_count > world();
  for (int r = 0; r < world(); ++r)
    if (!majority ? best_count < world() : of(r) != of(best)) odd.push_back(r);
  return odd;
}

namespace {
std::vector<std::pair<size_t, size_t>> segments_of(const ParamLayout& l) {
  std::vector<std::pair<size_t, size_t>> s;
  for (const TensorInfo& t : l.tensors) s.emplace_back(t.offset, t.numel);
  return s;
}
}  // namespace

GradReducer::GradReducer(Llama& model, int shards, const RankGroup& group)
    : model_(model), group_(group), shards_(shards), sum_(segments_of(model.layout()), shards) {
  if (shards % group.world() != 0)
    fail("[dist] train.grad_accum = " + std::to_string(shards) + " micro-batches cannot be split over " +
         std::to_string(group.world()) + " ranks: use a number of ranks that divides it");
  count_ = shards / group.world();
  first_ = group.rank() * count_;
  plain_ = env_or("TANDEM_DIST_PLAIN_SUM", "") == "1";
  overlap_ = exact() && group.comm() && model.backend().name() == "cpu" &&
             env_or("TANDEM_DIST_OVERLAP", "1") != "0";
  if (!overlap_) return;
  // The blocks of the backward's hook as ranges of tensors (the layout lists the embedding,
  // then each layer's tensors, then the final norm and an untied lm_head).
  const auto& ts = model.layout().tensors;
  const int L = model.config().n_layers;
  auto block_of = [&](const std::string& name) {
    if (name.rfind("model.embed_tokens.", 0) == 0) return 0;
    if (name.rfind("model.layers.", 0) == 0) return 1 + std::atoi(name.c_str() + 13);
    return L + 1;
  };
  blocks_.assign((size_t)L + 2, {ts.size(), 0});
  for (size_t i = 0; i < ts.size(); ++i) {
    auto& b = blocks_[(size_t)block_of(ts[i].name)];
    b.first = std::min(b.first, i);
    b.second = std::max(b.second, i + 1);
  }
  staging_.resize(blocks_.size());
  for (size_t b = 0; b < blocks_.size(); ++b) {
    size_t n = 0;
    for (size_t i = blocks_[b].first; i < blocks_[b].second; ++i) {
      TANDEM_CHECK(block_of(ts[i].name) == (int)b, "the blocks' tensors are contiguous in the layout");
      n += ts[i].numel;
    }
    staging_[b].resize(n);
  }
  bg_ = std::make_unique<BackgroundCollectives>();
}

std::function<void(int)> GradReducer::ready_hook(int shard) {
  // The rank's last shard completes its part of the sum. Every rank reduces the same buckets
  // in the same order whatever happens to one of them (a fault is applied inside its bucket).
  hooked_ = overlap_ && shard == first_ + count_ - 1;
  if (!hooked_) return nullptr;
  step_hooked_ = true;
  return [this](int block) {
    const size_t b = (size_t)(block + 1);
    const auto [first, last] = blocks_[b];
    sum_.add_segments(model_.grads(), first, last);
    const auto& ts = model_.layout().tensors;
    if (flip_bit_ >= 0) {  // fault injection: this rank's bucket corrupted before its sum
      const size_t at = flip_which_ % sum_.size();
      for (size_t i = first; i < last; ++i)
        if (at >= ts[i].offset && at < ts[i].offset + ts[i].numel) {
          int64_t& x = sum_.accumulator()[at];
          x = (int64_t)((uint64_t)x ^ (1ull << flip_bit_));
          flip_bit_ = -1;
        }
    }
    bg_->push([this, b, first = first, last = last, &ts] {
      if (b + 1 == blocks_.size() && delay_s_ > 0)  // a slow link: the step's first collective
        std::this_thread::sleep_for(std::chrono::duration<double>(delay_s_));
      int64_t* acc = sum_.accumulator();
      std::vector<int64_t>& st = staging_[b];
      size_t k = 0;
      for (size_t i = first; i < last; ++i)
        for (size_t j = 0; j < ts[i].numel; ++j) st[k++] = acc[ts[i].offset + j];
      group_.comm()->all_reduce(st.data(), st.size(), CommType::kI64, CommOp::kSum);
      k = 0;
      for (size_t i = first; i < last; ++i)
        for (size_t j = 0; j < ts[i].numel; ++j) acc[ts[i].offset + j] = st[k++];
    });
  };
}

void GradReducer::begin() {
  loss_ = 0;
  step_hooked_ = false;
  began_ = Clock::now();
  // Shard losses, each rank's per-tensor maxima, each rank's compute seconds.
  slots_.assign((size_t)shards_ + (size_t)group_.world() * (sum_.exponents().size() + 1), 0.0);
  if (exact()) sum_.begin();
}

void GradReducer::add_shard(int shard, double loss_sum) {
  slots_[(size_t)shard] = loss_sum;
  if (!exact()) return;
  if (hooked_) {  // its blocks were added (and are being summed) as the backward made them
    hooked_ = false;
    return;
  }
  sum_.add(host_grads());
}

float* GradReducer::host_grads() {
  if (model_.backend().name() == "cpu") return model_.grads();
  const size_t P = model_.num_params();
  host_.resize(P);
  model_.backend().to_host(host_.data(), model_.grads(), P * sizeof(float));
  return host_.data();
}

bool GradReducer::finish() {
  const size_t nseg = sum_.exponents().size();
  const int W = group_.world();
  if (exact()) {
    const auto& m = sum_.local_max();
    std::copy(m.begin(), m.end(), slots_.begin() + shards_ + (ptrdiff_t)(group_.rank() * nseg));
  }
  const auto t0 = Clock::now();
  const size_t time_slots = (size_t)shards_ + (size_t)W * nseg;
  slots_[time_slots + (size_t)group_.rank()] = std::chrono::duration<double>(t0 - began_).count();
  if (flip_bit_ >= 0) {  // fault injection: corrupt this rank's contribution before the sum
    if (exact()) {
      int64_t& x = sum_.accumulator()[flip_which_ % sum_.size()];
      x = (int64_t)((uint64_t)x ^ (1ull << flip_bit_));
    } else {
      flip_bit(model_.backend(), model_.grads(), flip_which_ % model_.num_params(), flip_bit_ & 31);
    }
    flip_bit_ = -1;
  }
  if (delay_s_ > 0 && group_.comm() && !step_hooked_)
    std::this_thread::sleep_for(std::chrono::duration<double>(delay_s_));
  // Buckets reduced during the backward finish first (the engine takes one call at a time).
  const bool overlapped = step_hooked_;
  if (overlapped) bg_->drain();
  group_.sum_slots(slots_);
  if (exact() && group_.comm() && !overlapped)
    group_.comm()->all_reduce(sum_.accumulator(), sum_.size(), CommType::kI64, CommOp::kSum);
  if (plain_ && group_.comm()) {
    const size_t P = model_.num_params();
    float* g = host_grads();
    group_.comm()->all_reduce(g, P, CommType::kF32, CommOp::kSum);
    if (g != model_.grads()) model_.backend().to_device(model_.grads(), g, P * sizeof(float));
  }
  comm_s_ += std::chrono::duration<double>(Clock::now() - t0).count();
  rank_s_.assign(slots_.begin() + (ptrdiff_t)time_slots, slots_.begin() + (ptrdiff_t)time_slots + W);
  loss_ = 0;
  for (int s = 0; s < shards_; ++s) loss_ += slots_[(size_t)s];  // in shard order
  if (!exact()) return true;
  std::vector<double> gmax(nseg, 0.0);
  for (int r = 0; r < group_.world(); ++r)
    for (size_t s = 0; s < nseg; ++s)
      gmax[s] = std::max(gmax[s], slots_[(size_t)shards_ + (size_t)r * nseg + s]);
  if (!sum_.accept(gmax)) return false;
  const size_t P = model_.num_params();
  if (model_.backend().name() != "cpu") {
    host_.resize(P);
    sum_.finish(host_.data(), gmax);
    model_.backend().to_device(model_.grads(), host_.data(), P * sizeof(float));
  } else {
    sum_.finish(model_.grads(), gmax);
  }
  return true;
}

}  // namespace tandem
