// GrpoObjective: advantages, aggregation weights and the per-token clipped surrogate (see
// objective.h). Host arithmetic in double; the logits' gradient goes through the backend.
#include "tandem/rl/objective.h"

#include <algorithm>
#include <cmath>

#include "tandem/core/error.h"
#include "tandem/model/llama.h"

namespace tandem {

GrpoLoss parse_grpo_loss(const std::string& name) {
  if (name == "grpo") return GrpoLoss::kGrpo;
  if (name == "dr_grpo") return GrpoLoss::kDrGrpo;
  if (name == "dapo") return GrpoLoss::kDapo;
  fail("[grpo] unknown loss '" + name + "' (expected grpo, dr_grpo or dapo)");
}

const char* grpo_loss_name(GrpoLoss t) {
  return t == GrpoLoss::kGrpo ? "grpo" : t == GrpoLoss::kDrGrpo ? "dr_grpo" : "dapo";
}

int RolloutBatch::completion_tokens(int i) const {
  int n = 0;
  for (int t = 0; t < T; ++t) n += targets[(size_t)i * T + t] >= 0;
  return n;
}

void ObjectiveStats::add(const ObjectiveStats& o) {
  loss += o.loss;
  tokens += o.tokens;
  kl += o.kl;
  entropy += o.entropy;
  ratio += o.ratio;
  clipped_low += o.clipped_low;
  clipped_high += o.clipped_high;
}

std::vector<double> group_advantages(std::span<const double> rewards, int G, GrpoLoss type) {
  TANDEM_CHECK(G > 0 && rewards.size() % (size_t)G == 0, "rewards come in whole groups");
  std::vector<double> adv(rewards.size());
  for (size_t g0 = 0; g0 < rewards.size(); g0 += (size_t)G) {
    double mean = 0;
    for (int k = 0; k < G; ++k) mean += rewards[g0 + k];
    mean /= G;
    double var = 0;  // unbiased, as torch.std
    for (int k = 0; k < G; ++k) var += (rewards[g0 + k] - mean) * (rewards[g0 + k] - mean);
    const double sd = G > 1 ? std::sqrt(var / (G - 1)) : 0.0;
    for (int k = 0; k < G; ++k) {
      const double d = rewards[g0 + k] - mean;
      adv[g0 + k] = type == GrpoLoss::kDrGrpo ? d : d / (sd + 1e-4);
    }
  }
  return adv;
}

void GrpoObjective::prepare(RolloutBatch& b) const {
  b.advantages = group_advantages(b.rewards, b.group, cfg_.type);
  b.weights.assign((size_t)b.S, 0.0);
  int seqs = 0;
  double tokens = 0;
  for (int i = 0; i < b.S; ++i)
    if (b.in_loss[(size_t)i]) ++seqs, tokens += b.completion_tokens(i);
  for (int i = 0; i < b.S; ++i) {
    if (!b.in_loss[(size_t)i]) continue;
    const int L = b.completion_tokens(i);
    if (L == 0) continue;
    switch (cfg_.type) {
      case GrpoLoss::kGrpo: b.weights[(size_t)i] = 1.0 / ((double)L * seqs); break;
      case GrpoLoss::kDrGrpo: b.weights[(size_t)i] = 1.0 / ((double)seqs * cfg_.max_new_tokens); break;
      case GrpoLoss::kDapo: b.weights[(size_t)i] = 1.0 / tokens; break;
    }
  }
}

double GrpoObjective::shard_loss(Llama& model, RolloutBatch& b, int first, int rows,
                                 ObjectiveStats& st) const {
  const int T = b.T;
  const size_t N = (size_t)rows * T;
  std::vector<int32_t> targets(N, -1);
  for (int r = 0; r < rows && first + r < b.S; ++r) {
    const size_t i = (size_t)(first + r);
    if (!b.in_loss[i]) continue;  // dropped: no loss, no gradient
    std::copy_n(b.targets.data() + i * T, T, targets.data() + (size_t)r * T);
  }
  std::vector<float> nll(N), ent(N), w(N, 0.f);
  const double inv_temp = 1.0 / cfg_.temperature;
  model.token_logprobs(targets.data(), nll.data(), ent.data(), (float)inv_temp);
  const double lo = 1.0 - cfg_.clip_low, hi = 1.0 + cfg_.clip_high;
  double loss = 0;
  for (size_t p = 0; p < N; ++p) {
    if (targets[p] < 0) continue;
    const size_t i = (size_t)first + p / T, at = i * T + p % T;
    const double wt = b.weights[i];
    const double A = b.advantages[i];
    const double logp = -(double)nll[p];
    if (!b.have_old) b.logp_old[at] = (float)logp;
    const double ratio = std::exp(logp - (double)b.logp_old[at]);
    const double unclipped = ratio * A, clipped = std::clamp(ratio, lo, hi) * A;
    // d surrogate / d logp: the unclipped branch when it is the minimum (ties too, where the
    // two agree), else the clipped one, which is constant in logp.
    const bool take_unclipped = unclipped <= clipped;
    double l = -std::min(unclipped, clipped);
    double dl = take_unclipped ? -ratio * A : 0.0;
    if (!take_unclipped) (A > 0 ? st.clipped_high : st.clipped_low) += 1;
    if (cfg_.beta > 0) {
      const double d = (double)b.logp_ref[at] - logp;
      const double kl = std::exp(d) - d - 1.0;
      l += cfg_.beta * kl;
      dl += cfg_.beta * (1.0 - std::exp(d));
      st.kl += kl;
    }
    loss += wt * l;
    // cross_entropy_rows' weight multiplies d(-logp)/dlogits: -dL/dlogp, through the scale.
    w[p] = (float)(-wt * dl * inv_temp);
    st.tokens += 1;
    st.entropy += ent[p];
    st.ratio += ratio;
  }
  model.weighted_loss_grad(w.data());
  st.loss += loss;
  return loss;
}

void reference_logprobs(Llama& ref, RolloutBatch& b, int rows, float logit_scale) {
  const int T = b.T;
  std::vector<int32_t> in((size_t)rows * T), tg((size_t)rows * T);
  std::vector<float> nll((size_t)rows * T);
  b.logp_ref.assign((size_t)b.S * T, 0.f);
  for (int first = 0; first < b.S; first += rows) {
    std::fill(in.begin(), in.end(), 0);
    std::fill(tg.begin(), tg.end(), -1);
    const int n = std::min(rows, b.S - first);
    std::copy_n(b.inputs.data() + (size_t)first * T, (size_t)n * T, in.data());
    std::copy_n(b.targets.data() + (size_t)first * T, (size_t)n * T, tg.data());
    ref.forward(in.data(), rows, T);
    ref.token_logprobs(tg.data(), nll.data(), nullptr, logit_scale);
    for (size_t p = 0; p < (size_t)n * T; ++p)
      b.logp_ref[(size_t)first * T + p] = -nll[p];
  }
}

}  // namespace tandem
