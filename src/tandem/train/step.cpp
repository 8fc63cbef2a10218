// StepBatch, StepComputer and evaluate_loss (see step.h).
#include "tandem/train/step.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "tandem/backend/backend.h"
#include "tandem/core/rng.h"
#include "tandem/model/llama.h"
#include "tandem/train/data_parallel.h"
#include "tandem/train/events.h"
#include "tandem/train/faults.h"
#include "tandem/train/optimizer.h"

namespace tandem {
namespace {
constexpr uint64_t kStreamFault = 0x6661756c74ull;  // fault-injection choices
}  // namespace

void StepBatch::resize(int a, int b, int t) {
  A = a, B = b, T = t;
  inputs.assign((size_t)a * b * t, 0);
  targets.assign((size_t)a * b * t, 0);
}

int64_t StepBatch::valid() const {
  int64_t v = 0;
  for (int32_t t : targets) v += t >= 0;
  return v;
}

StepComputer::StepComputer(Llama& model, Backend& be, GradReducer& reducer, FaultPlan& faults,
                           EventLog& events, uint64_t seed)
    : model_(model), be_(be), reducer_(reducer), faults_(faults), events_(events), seed_(seed) {}

size_t StepComputer::pick(const float* dev, size_t n, int64_t step, int bit) const {
  size_t i = rng_u64(seed_, kStreamFault, (uint64_t)step) % n;
  for (size_t k = 0; k < n; ++k, i = (i + 1) % n) {
    float x;
    be_.to_host(&x, dev + i, sizeof x);
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if (std::fabs(x) > 1e-30f && !(u >> bit & 1u)) return i;
  }
  return i;
}

void StepComputer::garble(StepBatch& b, int64_t salt, int vocab) const {
  for (size_t i = 0; i < b.inputs.size(); ++i) {
    b.inputs[i] = (int32_t)(rng_u64(salt, kStreamFault, 2 * i) % (uint64_t)vocab);
    b.targets[i] = (int32_t)(rng_u64(salt, kStreamFault, 2 * i + 1) % (uint64_t)vocab);
  }
}

StepResult StepComputer::run(const StepBatch& b, int64_t n, const std::vector<int>& grad_exp,
                             bool inject, bool replay, const std::function<void()>& beat,
                             StepSource* source) {
  const double replay_delay = faults_.replay_delay();
  if (replay && replay_delay > 0)  // slow_replay: a recomputation that takes longer
    std::this_thread::sleep_for(std::chrono::duration<double>(replay_delay));
  const int64_t valid = b.valid();
  const float dscale = valid > 0 ? 1.0f / (float)valid : 0.f;
  const size_t P = model_.num_params();
  reducer_.set_exponents(grad_exp);
  const double slowdown = faults_.slowdown();
  for (int attempt = 0;; ++attempt) {
    const auto t0 = std::chrono::steady_clock::now();
    reducer_.begin();
    if (source) source->begin();
    if (inject && attempt == 0)
      if (const Fault* f = faults_.fire(FaultKind::kBitflipBucket, n))
        reducer_.flip_before_sum(f->bit, rng_u64(seed_, kStreamFault, (uint64_t)n));
    model_.zero_grads();
    for (int k = 0; k < reducer_.my_shards(); ++k) {
      const int a = reducer_.first_shard() + k;
      if (reducer_.exact() && k > 0) model_.zero_grads();
      model_.forward(b.inputs_of(a), b.B, b.T, b.doc_start_of(a));
      if (inject && a == 0 && attempt == 0)
        if (const Fault* f = faults_.fire(FaultKind::kBitflipAct, n)) {
          const size_t nl = (size_t)b.B * b.T * model_.config().vocab_size;
          float* logits = const_cast<float*>(model_.logits());
          flip_bit(be_, logits, pick(logits, nl, n, f->bit), f->bit);
        }
      const double l =
          source ? source->shard_loss(model_, b, a) : model_.loss(b.targets_of(a), dscale, true);
      model_.backward(reducer_.ready_hook(a));
      reducer_.add_shard(a, l);
      beat();
    }
    if (slowdown > 1)  // slow_rank: a device that computes this many times slower
      std::this_thread::sleep_for((slowdown - 1) * (std::chrono::steady_clock::now() - t0));
    if (reducer_.finish()) break;
    events_.emit("grad_scale_refit", {{"step", n}, {"attempt", attempt + 1}});
  }
  if (inject) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    if (faults_.fire(FaultKind::kNanGrad, n))
      be_.to_device(model_.grads() + pick(model_.grads(), P, n, 31), &nan, 4);
    if (faults_.fire(FaultKind::kInfGrad, n))
      be_.to_device(model_.grads() + pick(model_.grads(), P, n, 31), &inf, 4);
    if (const Fault* f = faults_.fire(FaultKind::kBitflipGrad, n))
      flip_bit(be_, model_.grads(), pick(model_.grads(), P, n, f->bit), f->bit);
  }
  StepResult r;
  r.loss = source ? reducer_.loss_sum() : valid > 0 ? reducer_.loss_sum() / (double)valid : 0.0;
  r.grad_norm = grad_norm(model_);
  return r;
}

EvalResult evaluate(Llama& model, const RankGroup& group, int batches, int B, int T,
                    const std::function<void(int64_t, int32_t*, int32_t*)>& fill,
                    const std::function<void()>& beat, bool accuracy) {
  const size_t V = (size_t)model.config().vocab_size;
  std::vector<int32_t> inputs((size_t)B * T), targets((size_t)B * T);
  std::vector<float> logits;
  // Per batch: summed loss, valid targets, correct argmaxes.
  std::vector<double> slots((size_t)batches * 3, 0.0);
  for (int i = group.rank(); i < batches; i += group.world()) {
    fill(i, inputs.data(), targets.data());
    model.forward(inputs.data(), B, T);
    double* s = slots.data() + (size_t)i * 3;
    for (int32_t t : targets) s[1] += t >= 0;
    if (accuracy) {
      logits.resize((size_t)B * T * V);
      model.backend().to_host(logits.data(), model.logits(), logits.size() * sizeof(float));
      for (size_t p = 0; p < targets.size(); ++p) {
        if (targets[p] < 0) continue;
        const float* row = logits.data() + p * V;
        s[2] += (int32_t)(std::max_element(row, row + V) - row) == targets[p];
      }
    }
    s[0] = model.loss(targets.data(), 0.f, false);
    beat();
  }
  group.sum_slots(slots);
  double sum = 0, valid = 0, correct = 0;
  for (int i = 0; i < batches; ++i) {  // in batch order
    sum += slots[(size_t)i * 3];
    valid += slots[(size_t)i * 3 + 1];
    correct += slots[(size_t)i * 3 + 2];
  }
  EvalResult r;
  r.loss = valid > 0 ? sum / valid : 0.0;
  if (accuracy) r.accuracy = valid > 0 ? correct / valid : 0.0;
  return r;
}

}  // namespace tandem
