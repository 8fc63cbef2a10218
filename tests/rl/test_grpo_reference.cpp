// The GRPO objective against an independent float64 PyTorch implementation
// (tests/reference/grpo_compare.py): on a fixed batch of rollouts through a real model, the
// loss and every parameter gradient of each loss type (grpo, dr_grpo, dapo; with and without
// the KL penalty) agree to 1e-4 relative error. And the known surprise: one on-policy pass of
// the grpo loss without KL has a loss of zero (a group's advantages sum to zero, every ratio
// is one) while its gradient is not zero.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "../model/model_test_util.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/rng.h"
#include "tandem/io/safetensors.h"
#include "tandem/rl/objective.h"

namespace tandem::test {
namespace {

const std::string kPython = "/usr/bin/python3";
const std::string kCompare = std::string(TANDEM_SOURCE_DIR) + "/tests/reference/grpo_compare.py";

StTensor tensor(const std::string& name, std::vector<int64_t> shape, const void* p, size_t bytes,
                const char* dtype) {
  StTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data.assign(static_cast<const char*>(p), bytes);
  return t;
}

ModelConfig grpo_model() { return small_config(48, 2, 4, 2, 80, true); }

// Two groups of four rollouts of rows of 14 tokens: prompts of 4-6 tokens, completions of
// 2-8; rewards with ties and a group of mixed rewards; one sequence dropped (overlong).
RolloutBatch make_rollouts(const ModelConfig& c, uint64_t seed) {
  RolloutBatch b;
  b.S = 8;
  b.T = 14;
  b.group = 4;
  b.inputs.assign((size_t)b.S * b.T, 0);
  b.targets.assign((size_t)b.S * b.T, -1);
  b.in_loss.assign((size_t)b.S, 1);
  b.in_loss[5] = 0;
  b.rewards = {1, 0, 0, 1, 0.5, 0, 1, 1.1};
  for (int i = 0; i < b.S; ++i) {
    const int prompt = 4 + (int)(rng_u64(seed, 1, (uint64_t)i) % 3);
    const int comp = 2 + (int)(rng_u64(seed, 2, (uint64_t)i) % 7);
    std::vector<int32_t> full;
    for (int t = 0; t < prompt + comp; ++t)
      full.push_back((int32_t)(rng_u64(seed, 3, (uint64_t)(i * 100 + t)) % c.vocab_size));
    for (size_t t = 0; t + 1 < full.size() && (int)t < b.T; ++t) {
      b.inputs[(size_t)i * b.T + t] = full[t];
      if ((int)t + 1 >= prompt) b.targets[(size_t)i * b.T + t] = full[t + 1];
    }
  }
  return b;
}

// The model's own log-probabilities of the targets, then moved by up to +-0.5 so that ratios
// leave the clip range on both sides; the reference's by up to +-0.5.
void perturb_logprobs(Llama& m, RolloutBatch& b, uint64_t seed) {
  std::vector<float> nll((size_t)b.S * b.T);
  m.forward(b.inputs.data(), b.S, b.T);
  m.token_logprobs(b.targets.data(), nll.data(), nullptr);
  b.logp_old.resize(nll.size());
  b.logp_ref.resize(nll.size());
  for (size_t p = 0; p < nll.size(); ++p) {
    b.logp_old[p] = -nll[p] + 1.0f * (rng_uniform(seed, 4, p) - 0.5f);
    b.logp_ref[p] = -nll[p] + 1.0f * (rng_uniform(seed, 5, p) - 0.5f);
  }
  b.have_old = true;
}

struct Result {
  double loss = 0;
  std::vector<float> grads;
  ObjectiveStats stats;
};

// The trainer's path: micro-batches of `rows`, forward, shard_loss, backward (accumulating).
Result run_objective(Llama& m, RolloutBatch& b, const ObjectiveConfig& oc, int rows) {
  GrpoObjective obj(oc);
  obj.prepare(b);
  m.zero_grads();
  Result r;
  std::vector<int32_t> in((size_t)rows * b.T);
  for (int first = 0; first < b.S; first += rows) {
    std::fill(in.begin(), in.end(), 0);
    const int n = std::min(rows, b.S - first);
    std::copy_n(b.inputs.data() + (size_t)first * b.T, (size_t)n * b.T, in.data());
    m.forward(in.data(), rows, b.T);
    r.loss += obj.shard_loss(m, b, first, rows, r.stats);
    m.backward();
  }
  r.grads.resize(m.num_params());
  m.backend().to_host(r.grads.data(), m.grads(), r.grads.size() * sizeof(float));
  return r;
}

class DumpDir {
 public:
  explicit DumpDir(const std::string& tag) {
    path_ = (std::filesystem::temp_directory_path() /
             ("tandem_grpo_ref_" + std::to_string(getpid()) + "_" + tag))
                .string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~DumpDir() {
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(path_);
  }
  std::string file(const std::string& f) const { return path_ + "/" + f; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_dump(const DumpDir& dir, Llama& m, const RolloutBatch& b, const ObjectiveConfig& oc,
                const Result& r) {
  const ModelConfig& c = m.config();
  nlohmann::json cfg = {{"dim", c.dim}, {"n_layers", c.n_layers}, {"n_heads", c.n_heads},
                        {"n_kv_heads", c.n_kv_heads}, {"hidden_dim", c.hidden_dim},
                        {"vocab_size", c.vocab_size}, {"context", c.context},
                        {"tie_embeddings", c.tie_embeddings}, {"rope_theta", c.rope_theta},
                        {"norm_eps", c.norm_eps}};
  nlohmann::json obj = {{"loss_type", grpo_loss_name(oc.type)}, {"clip_low", oc.clip_low},
                        {"clip_high", oc.clip_high}, {"beta", oc.beta},
                        {"max_new_tokens", oc.max_new_tokens}, {"temperature", oc.temperature},
                        {"group", b.group}};
  atomic_write_file(dir.file("config.json"), cfg.dump(2));
  atomic_write_file(dir.file("objective.json"), obj.dump(2));
  std::vector<float> params(m.num_params());
  m.save_params(params.data());
  StFile w, o;
  for (const auto& t : m.layout().tensors)
    w.tensors.push_back(st_f32(t.name, t.shape, params.data() + t.offset));
  atomic_write_file(dir.file("model.safetensors"), safetensors_serialize(w));
  const std::vector<int64_t> st = {b.S, b.T};
  o.tensors.push_back(tensor("inputs", st, b.inputs.data(), b.inputs.size() * 4, "I32"));
  o.tensors.push_back(tensor("targets", st, b.targets.data(), b.targets.size() * 4, "I32"));
  o.tensors.push_back(tensor("rewards", {b.S}, b.rewards.data(), b.rewards.size() * 8, "F64"));
  o.tensors.push_back(tensor("in_loss", {b.S}, b.in_loss.data(), b.in_loss.size(), "U8"));
  o.tensors.push_back(st_f32("logp_old", st, b.logp_old.data()));
  o.tensors.push_back(st_f32("logp_ref", st, b.logp_ref.data()));
  const double loss = r.loss;
  o.tensors.push_back(tensor("loss", {1}, &loss, 8, "F64"));
  for (const auto& t : m.layout().tensors)
    o.tensors.push_back(st_f32("grad." + t.name, t.shape, r.grads.data() + t.offset));
  atomic_write_file(dir.file("outputs.safetensors"), safetensors_serialize(o));
}

struct Case {
  const char* name;
  GrpoLoss type;
  double beta, temperature;
};

class GrpoReference : public ::testing::TestWithParam<Case> {};

TEST_P(GrpoReference, LossAndGradientsMatchPyTorch) {
  ASSERT_EQ(std::system((kPython + " -c 'import numpy, torch' >/dev/null 2>&1").c_str()), 0)
      << kPython << " cannot import torch (install Debian's python3-torch)";
  const Case& k = GetParam();
  auto be = make_backend("cpu", 2);
  Llama m(grpo_model(), *be);
  init_test_weights(m, 99);
  RolloutBatch b = make_rollouts(m.config(), 7);
  ObjectiveConfig oc;
  oc.type = k.type;
  oc.beta = k.beta;
  oc.clip_low = 0.2;
  oc.clip_high = k.type == GrpoLoss::kDapo ? 0.28 : 0.2;
  oc.max_new_tokens = 9;
  oc.temperature = k.temperature;
  perturb_logprobs(m, b, 8);
  const Result r = run_objective(m, b, oc, 3);  // 3 rows per micro-batch: a ragged last one
  // The batch must exercise both sides of the clip, or the test proves little.
  EXPECT_GT(r.stats.clipped_low, 0);
  EXPECT_GT(r.stats.clipped_high, 0);
  DumpDir dir(k.name);
  write_dump(dir, m, b, oc, r);
  const std::string log = dir.file("compare.log");
  const int status =
      std::system((kPython + " " + kCompare + " " + dir.path() + " >" + log + " 2>&1").c_str());
  const std::string out = read_file(log);
  std::cout << out;
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "grpo_compare.py: mismatch (dump in " << dir.path()
                                    << "):\n" << out;
}

INSTANTIATE_TEST_SUITE_P(Objective, GrpoReference,
                         ::testing::Values(Case{"grpo", GrpoLoss::kGrpo, 0.0, 1.0},
                                           Case{"grpo_kl", GrpoLoss::kGrpo, 0.04, 1.0},
                                           Case{"dr_grpo", GrpoLoss::kDrGrpo, 0.0, 1.0},
                                           Case{"dr_grpo_kl_temp", GrpoLoss::kDrGrpo, 0.1, 0.7},
                                           Case{"dapo", GrpoLoss::kDapo, 0.0, 1.0},
                                           Case{"dapo_kl", GrpoLoss::kDapo, 0.04, 1.0}),
                         [](const auto& info) { return std::string(info.param.name); });

// One on-policy pass of the grpo loss without KL: every ratio is exactly one, so the loss is
// -sum_i A_i / S (each sequence's token mean of A_i is A_i), and a group's advantages sum to
// zero: the loss is zero. The gradient is sum_i A_i / (S L_i) sum_t grad log p: not zero. A
// loss curve of such a run is flat at zero while the policy learns.
TEST(GrpoObjective, OnPolicyLossIsZeroButTheGradientIsNot) {
  auto be = make_backend("cpu", 2);
  Llama m(grpo_model(), *be);
  init_test_weights(m, 5);
  RolloutBatch b = make_rollouts(m.config(), 11);
  b.in_loss.assign((size_t)b.S, 1);  // every sequence of each group, so advantages sum to zero
  b.logp_old.assign((size_t)b.S * b.T, 0.f);
  b.logp_ref.assign((size_t)b.S * b.T, 0.f);
  b.have_old = false;  // on-policy: logp_old is this pass's own logp
  ObjectiveConfig oc;
  const Result r = run_objective(m, b, oc, 4);
  EXPECT_NEAR(r.loss, 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(r.stats.ratio, r.stats.tokens) << "every ratio is exactly one";
  double g2 = 0;
  for (float g : r.grads) g2 += (double)g * g;
  EXPECT_GT(std::sqrt(g2), 1e-3) << "the policy gradient of the same batch is not zero";
  // The advantages of each group sum to zero (the reason for the zero loss).
  for (int g0 = 0; g0 < b.S; g0 += b.group) {
    double s = 0;
    for (int k = 0; k < b.group; ++k) s += b.advantages[(size_t)(g0 + k)];
    EXPECT_NEAR(s, 0.0, 1e-12);
  }
}

TEST(GrpoObjective, AdvantagesOfEachVariant) {
  const std::vector<double> r = {1, 0, 0, 1, 2, 2, 2, 2};
  const auto a = group_advantages(r, 4, GrpoLoss::kGrpo);
  const double sd = std::sqrt(1.0 / 3.0);  // unbiased std of {1, 0, 0, 1}
  EXPECT_NEAR(a[0], 0.5 / (sd + 1e-4), 1e-12);
  EXPECT_NEAR(a[1], -0.5 / (sd + 1e-4), 1e-12);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(a[(size_t)i], 0.0) << "identical rewards: no signal";
  const auto d = group_advantages(r, 4, GrpoLoss::kDrGrpo);
  EXPECT_DOUBLE_EQ(d[0], 0.5);
  EXPECT_DOUBLE_EQ(d[2], -0.5);
  EXPECT_THROW(parse_grpo_loss("ppo"), Error);
}

}  // namespace
}  // namespace tandem::test
