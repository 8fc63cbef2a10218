// The GRPO objective on a batch of rollouts: group-relative advantages from the rewards, the
// clipped policy-gradient surrogate with the importance ratio against the policy that sampled
// the rollouts, an optional KL penalty to a frozen reference (the k3 estimator), and the
// aggregation of the published variants:
//   grpo     (DeepSeekMath) A = (r - mean) / (std + 1e-4); each sequence's token mean, averaged
//            over the sequences
//   dr_grpo  (Dr. GRPO) A = r - mean; token sum over S x max_new_tokens (no length bias)
//   dapo     (DAPO) A as grpo, clip_high above clip_low; token sum over all loss tokens
// The per-token term, with ratio = exp(logp - logp_old) and kl = exp(ref - logp) - (ref - logp) - 1:
//   l = -min(ratio A, clamp(ratio, 1 - clip_low, 1 + clip_high) A) + beta kl
// and the loss is sum_t w_t l_t, w_t the token's aggregation weight. Its gradient reaches the
// logits through cross_entropy_rows with weight -dL/dlogp per token (logp = -loss).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tandem {

class Llama;

enum class GrpoLoss { kGrpo, kDrGrpo, kDapo };
// Throws "[grpo] ..." for a name other than grpo, dr_grpo, dapo.
GrpoLoss parse_grpo_loss(const std::string& name);
const char* grpo_loss_name(GrpoLoss t);

struct ObjectiveConfig {
  GrpoLoss type = GrpoLoss::kGrpo;
  double clip_low = 0.2, clip_high = 0.2;
  double beta = 0;          // KL coefficient (0: no reference model)
  int max_new_tokens = 1;   // dr_grpo's constant length
  double temperature = 1;   // the policy is softmax(logits / temperature)
};

// One row per sequence: inputs and targets of T tokens (targets < 0 outside the completion).
struct RolloutBatch {
  int S = 0, T = 0;                       // sequences, tokens per row
  int group = 1;                          // G: consecutive sequences of one prompt
  std::vector<int32_t> inputs, targets;   // S x T
  std::vector<double> rewards;            // S
  std::vector<uint8_t> in_loss;           // S: 0 drops the sequence (overlong masking)
  // Per token (S x T): the sampling policy's and the reference's log-probabilities of the
  // target. `have_old` false: the batch is on-policy, logp_old is taken from this computation.
  std::vector<float> logp_old, logp_ref;
  bool have_old = false;
  // Filled by prepare():
  std::vector<double> advantages;  // S
  std::vector<double> weights;     // S: every loss token of sequence i weighs weights[i]
  int completion_tokens(int i) const;
};

// Advantages of rewards in groups of G consecutive samples.
std::vector<double> group_advantages(std::span<const double> rewards, int G, GrpoLoss type);

struct ObjectiveStats {
  double loss = 0;                // sum of w_t l_t
  double tokens = 0;              // loss tokens seen
  double kl = 0, entropy = 0, ratio = 0;  // sums over the loss tokens
  double clipped_low = 0, clipped_high = 0;  // tokens whose clipped branch is taken
  void add(const ObjectiveStats& o);
};

class GrpoObjective {
 public:
  explicit GrpoObjective(const ObjectiveConfig& cfg) : cfg_(cfg) {}
  const ObjectiveConfig& config() const { return cfg_; }
  // Advantages and aggregation weights from the rewards and completion lengths.
  void prepare(RolloutBatch& b) const;
  // After model.forward over rows first .. first + rows - 1 (rows past S are padding): leaves
  // dL/dlogits in the model's logits and returns this shard's part of the loss. Records the
  // shard's log-probabilities into logp_old when the batch is on-policy.
  double shard_loss(Llama& model, RolloutBatch& b, int first, int rows, ObjectiveStats& st) const;

 private:
  ObjectiveConfig cfg_;
};

// The reference model's log-probabilities of the batch's targets (into b.logp_ref), rows at a
// time through a forward of `ref`, at the policy's temperature (logit_scale = 1 / temperature).
void reference_logprobs(Llama& ref, RolloutBatch& b, int rows, float logit_scale);

}  // namespace tandem
