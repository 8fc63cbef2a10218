// GrpoSource (see grpo.h): rollouts, rewards, the rollout cache between passes, logging.
#include "tandem/rl/grpo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "tandem/backend/backend.h"
#include "tandem/ckpt/checkpoint.h"
#include "tandem/core/error.h"
#include "tandem/core/rng.h"
#include "tandem/data/chat.h"
#include "tandem/data/tokenizer.h"
#include "tandem/infer/engine.h"
#include "tandem/model/llama.h"
#include "tandem/rl/rollout.h"
#include "tandem/train/events.h"
#include "tandem/train/resume.h"

namespace tandem {
namespace {

constexpr uint64_t kStreamPrompts = 0x70726f6d7074ull;  // epoch permutations of the prompts
constexpr uint64_t kStreamRollout = 0x726f6c6c6f7574ull;  // rollout sampling

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

ObjectiveConfig objective_config(const GrpoConfig& g) {
  ObjectiveConfig o;
  o.type = parse_grpo_loss(g.loss);
  o.clip_low = g.clip_low;
  o.clip_high = g.clip_high;
  o.beta = g.beta;
  o.max_new_tokens = g.max_new_tokens;
  o.temperature = g.temperature;
  return o;
}

std::vector<uint32_t> float_bits(const std::vector<float>& v) {
  std::vector<uint32_t> u(v.size());
  std::memcpy(u.data(), v.data(), v.size() * 4);
  return u;
}
std::vector<float> bits_float(const std::vector<uint32_t>& u) {
  std::vector<float> v(u.size());
  std::memcpy(v.data(), u.data(), u.size() * 4);
  return v;
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / (double)v.size();
}
double std_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return v.empty() ? 0.0 : std::sqrt(s / (double)v.size());
}

}  // namespace

GrpoSource::GrpoSource(const RunConfig& cfg, const Tokenizer& tok, Llama& model, Backend& be)
    : cfg_(cfg), g_(cfg.grpo), tok_(tok), model_(model), be_(be),
      obj_(objective_config(cfg.grpo)) {
  VerifierSpec v;
  v.name = g_.verifier;
  v.kind = g_.verifier;
  v.pattern = g_.pattern;
  v.command = g_.command;
  v.timeout_s = g_.timeout_s;
  v.on_error = g_.on_error;
  verifier_ = make_verifier(v);
  if (!g_.format_pattern.empty()) {
    VerifierSpec f;
    f.name = "format";
    f.kind = "regex";
    f.pattern = g_.format_pattern;
    format_ = make_verifier(f);
  }
  // A prompt and its completion are one training row of seq_len + 1 tokens.
  const int row = cfg.train.seq_len + 1;
  prompts_ = load_prompts(g_.prompts, tok, row, g_.max_new_tokens, "grpo");
  if (!g_.val.empty())
    val_ = std::make_unique<HeldOutEval>(g_.val, g_.val_limit, v, tok, row, g_.max_new_tokens,
                                         "grpo");
  stops_ = {tok.eos_id()};
  if (has_chat_format(tok)) stops_.push_back(tok.piece_id(kTurnEnd));
  if (g_.beta > 0) {
    const std::string tok_path = cfg.data_dir + "/tokenizer.model";
    const std::string dir = resolve_init(cfg, g_.ref.empty() ? g_.init : g_.ref,
                                         g_.ref.empty() ? "grpo.init" : "grpo.ref", tok.sha256(),
                                         tok_path);
    ref_ = std::make_unique<Llama>(cfg.model, be);
    CheckpointData ck = load_checkpoint(dir, ref_->layout(), false);
    ref_->load_params(ck.params.data());
    ref_->reserve(cfg.train.batch_size, cfg.train.seq_len);
  }
}

GrpoSource::~GrpoSource() = default;

size_t GrpoSource::prompt_of(int64_t k) const {
  const int64_t n = (int64_t)prompts_.size(), epoch = k / n;
  if (epoch != epoch_) {
    perm_.resize((size_t)n);
    for (size_t i = 0; i < perm_.size(); ++i) perm_[i] = (uint32_t)i;
    for (int64_t i = n - 1; i > 0; --i) {
      const uint64_t r = rng_u64(cfg_.train.seed, kStreamPrompts, ((uint64_t)epoch << 32) | (uint64_t)i);
      std::swap(perm_[(size_t)i], perm_[(size_t)(r % (uint64_t)(i + 1))]);
    }
    epoch_ = epoch;
  }
  return perm_[(size_t)(k % n)];
}

std::vector<double> GrpoSource::score(const std::vector<Sample>& s,
                                      std::vector<double>* format_part) {
  std::string why;
  std::vector<double> r = verifier_->score(s, &why);
  if (!why.empty()) {
    std::fprintf(stderr, "\n%s: scored 0 (on_error = \"zero\")\n", why.c_str());
    if (events_)
      events_->emit("verifier_failed", {{"verifier", verifier_->name()}, {"reason", why},
                                        {"during", "rollouts"}, {"action", "scored 0"}});
  }
  if (format_) {
    *format_part = format_->score(s);
    for (size_t i = 0; i < r.size(); ++i) r[i] += g_.format_weight * (*format_part)[i];
  }
  return r;
}

void GrpoSource::rollouts(int64_t step, int64_t& cursor, const std::function<void()>& beat) {
  const auto t0 = Clock::now();
  const int G = g_.group_size, P = g_.prompts_per_step, T = cfg_.train.seq_len;
  // The policy's current weights, in inference form.
  std::vector<float> host(model_.num_params());
  be_.to_host(host.data(), model_.params(), host.size() * sizeof(float));
  InferModel im(cfg_.model, host.data(), be_, WType::F32);
  GenerateOptions go;
  go.max_new = g_.max_new_tokens;
  go.slots = g_.rollout_slots > 0 ? g_.rollout_slots : P * G;
  go.sampling.temperature = (float)g_.temperature;
  go.sampling.top_k = g_.top_k;
  go.sampling.top_p = (float)g_.top_p;
  go.stops = stops_;

  struct Group {
    size_t prompt;
    std::vector<Completion> out;
    std::vector<double> reward, verifier_reward, format_reward;
  };
  std::vector<Group> kept;
  int sampled_groups = 0, zero_var = 0;
  std::vector<double> all_reward, all_verifier, all_format, lengths;
  int truncated = 0;
  GenerateStats gs;
  for (int round = 0; round < (g_.dynamic_sampling ? g_.max_resample : 1); ++round) {
    std::vector<const std::vector<int32_t>*> reqs;
    std::vector<uint64_t> seeds;
    std::vector<size_t> which(P);
    for (int j = 0; j < P; ++j) {
      const int64_t k = cursor + j;
      which[(size_t)j] = prompt_of(k);
      for (int s = 0; s < G; ++s) {
        reqs.push_back(&prompts_[which[(size_t)j]].tokens);
        // (seed, step, prompt, sample): a replayed step draws the same completions.
        seeds.push_back(rng_u64(rng_u64(cfg_.train.seed, kStreamRollout, (uint64_t)step),
                                (uint64_t)k, (uint64_t)s));
      }
    }
    cursor += P;
    std::vector<Completion> outs = generate(im, reqs, seeds, go, beat, &gs);
    std::vector<Sample> samples;
    for (size_t i = 0; i < outs.size(); ++i) {
      const Prompt& p = prompts_[which[i / (size_t)G]];
      std::vector<int32_t> t = outs[i].tokens;
      if (outs[i].finished) t.pop_back();
      samples.push_back({p.text, tok_.decode(t), p.reference});
    }
    std::vector<double> fmt;
    const std::vector<double> r = score(samples, &fmt);
    beat();
    for (int j = 0; j < P; ++j) {
      Group gr;
      gr.prompt = which[(size_t)j];
      bool same = true;
      for (int s = 0; s < G; ++s) {
        const size_t i = (size_t)j * G + s;
        gr.out.push_back(std::move(outs[i]));
        gr.reward.push_back(r[i]);
        gr.format_reward.push_back(format_ ? fmt[i] : 0.0);
        gr.verifier_reward.push_back(format_ ? r[i] - g_.format_weight * fmt[i] : r[i]);
        same = same && r[i] == r[(size_t)j * G];
        all_reward.push_back(r[i]);
        all_verifier.push_back(gr.verifier_reward.back());
        if (format_) all_format.push_back(fmt[i]);
        lengths.push_back((double)gr.out.back().tokens.size());
        truncated += !gr.out.back().finished;
      }
      ++sampled_groups;
      zero_var += same;
      if ((!g_.dynamic_sampling || !same) && (int)kept.size() < P) kept.push_back(std::move(gr));
    }
    if ((int)kept.size() >= P) break;
  }

  // One row per completion: prompt then completion; targets on the completion's tokens.
  RolloutBatch& b = batch_;
  b = RolloutBatch{};
  b.S = (int)kept.size() * G;
  b.T = T;
  b.group = G;
  b.inputs.assign((size_t)b.S * T, 0);
  b.targets.assign((size_t)b.S * T, -1);
  b.in_loss.assign((size_t)b.S, 1);
  for (size_t gi = 0; gi < kept.size(); ++gi)
    for (int s = 0; s < G; ++s) {
      const size_t i = gi * G + s;
      const std::vector<int32_t>& p = prompts_[kept[gi].prompt].tokens;
      const Completion& c = kept[gi].out[(size_t)s];
      std::vector<int32_t> full = p;
      full.insert(full.end(), c.tokens.begin(), c.tokens.end());
      TANDEM_CHECK((int)full.size() <= T + 1, "a rollout fits its row");
      for (size_t t = 0; t + 1 < full.size(); ++t) {
        b.inputs[i * T + t] = full[t];
        if (t + 1 >= p.size()) b.targets[i * T + t] = full[t + 1];
      }
      b.rewards.push_back(kept[gi].reward[(size_t)s]);
      if (g_.overlong_mask && !c.finished) b.in_loss[i] = 0;
    }
  obj_.prepare(b);
  b.logp_old.assign((size_t)b.S * T, 0.f);
  b.have_old = false;
  if (ref_) reference_logprobs(*ref_, b, cfg_.train.batch_size, (float)(1.0 / g_.temperature));
  else b.logp_ref.assign((size_t)b.S * T, 0.f);

  const double secs = since(t0);
  nlohmann::json st = {{"reward_mean", mean_of(all_reward)},
                       {"reward_std", std_of(all_reward)},
                       {"zero_variance_groups", sampled_groups ? (double)zero_var / sampled_groups : 0.0},
                       {"groups_sampled", sampled_groups},
                       {"groups_kept", (int)kept.size()},
                       {"completion_len", mean_of(lengths)},
                       {"completion_len_max", lengths.empty() ? 0.0 : *std::max_element(lengths.begin(), lengths.end())},
                       {"truncated", lengths.empty() ? 0.0 : truncated / (double)lengths.size()}};
  nlohmann::json per = nlohmann::json::object();
  per[verifier_->name()] = {{"mean", mean_of(all_verifier)}, {"std", std_of(all_verifier)}};
  if (format_) per["format"] = {{"mean", mean_of(all_format)}, {"std", std_of(all_format)}};
  st["rewards"] = per;
  rollout_stats_ = st;
  timing_ = {{"rollout_s", secs},
             {"rollout_tokens", gs.new_tokens},
             {"rollout_tokens_per_s", secs > 0 ? std::round(gs.new_tokens / secs) : 0.0}};
}

void GrpoSource::next_batch(int64_t step, int64_t& cursor, nlohmann::json& state, StepBatch& b,
                            const std::function<void()>& beat) {
  pass_ = (int)((step - 1) % g_.passes);
  timing_ = nlohmann::json::object();
  if (pass_ == 0) {
    rollouts(step, cursor, beat);
  } else {
    // A later pass over the rollouts of the batch's first step, as the run state holds them.
    if (!state.is_object() || !state.contains("inputs"))
      fail("[grpo] step " + std::to_string(step) + " is pass " + std::to_string(pass_ + 1) +
           " over a batch of rollouts, but the saved state holds none");
    RolloutBatch& r = batch_;
    r = RolloutBatch{};
    r.S = state.at("S").get<int>();
    r.T = cfg_.train.seq_len;
    r.group = g_.group_size;
    r.inputs = state.at("inputs").get<std::vector<int32_t>>();
    r.targets = state.at("targets").get<std::vector<int32_t>>();
    r.in_loss = state.at("in_loss").get<std::vector<uint8_t>>();
    r.rewards = state.at("rewards").get<std::vector<double>>();
    r.logp_old = bits_float(state.at("logp_old").get<std::vector<uint32_t>>());
    r.logp_ref = bits_float(state.at("logp_ref").get<std::vector<uint32_t>>());
    r.have_old = true;
    if (r.inputs.size() != (size_t)r.S * r.T || r.logp_old.size() != r.inputs.size())
      fail("[grpo] the saved rollouts do not match train.seq_len");
    obj_.prepare(r);
    rollout_stats_ = nlohmann::json();
  }
  const int B = cfg_.train.batch_size, A = cfg_.train.grad_accum, T = cfg_.train.seq_len;
  b.resize(A, B, T);
  std::fill(b.targets.begin(), b.targets.end(), -1);
  std::copy(batch_.inputs.begin(), batch_.inputs.end(), b.inputs.begin());
  for (int i = 0; i < batch_.S; ++i)
    if (batch_.in_loss[(size_t)i])
      std::copy_n(batch_.targets.data() + (size_t)i * T, T, b.targets.data() + (size_t)i * T);
}

double GrpoSource::shard_loss(Llama& model, const StepBatch& b, int a) {
  return obj_.shard_loss(model, batch_, a * b.B, b.B, stats_);
}

nlohmann::json GrpoSource::committed(nlohmann::json& state) {
  if (pass_ + 1 < g_.passes) {
    // The next pass reads the rollouts, with the log-probabilities of the policy that
    // sampled them (recorded by this first pass), from the run state.
    const RolloutBatch& r = batch_;
    state = {{"S", r.S},
             {"inputs", r.inputs},
             {"targets", r.targets},
             {"in_loss", r.in_loss},
             {"rewards", r.rewards},
             {"logp_old", float_bits(r.logp_old)},
             {"logp_ref", float_bits(r.logp_ref)}};
  } else {
    state = nullptr;
  }
  const double n = std::max(1.0, stats_.tokens);
  nlohmann::json j = {{"pass", pass_ + 1},
                      {"kl", stats_.kl / n},
                      {"entropy", stats_.entropy / n},
                      {"ratio", stats_.ratio / n},
                      {"clip_low", stats_.clipped_low / n},
                      {"clip_high", stats_.clipped_high / n},
                      {"loss_tokens", stats_.tokens}};
  if (rollout_stats_.is_object())
    for (const auto& [k, v] : rollout_stats_.items()) j[k] = v;
  return j;
}

nlohmann::json GrpoSource::evaluate(const std::function<void()>& beat) {
  if (!val_) return nullptr;
  return {{"val_reward", val_->run(model_, beat, events_)}, {"val_n", (int)val_->size()}};
}

}  // namespace tandem
