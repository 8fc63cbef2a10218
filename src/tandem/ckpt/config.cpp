// Strict TOML parsing of run configs on toml++.
#include "tandem/ckpt/config.h"

#include <toml++/toml.h>

#include <charconv>
#include <cstdlib>
#include <limits>
#include <set>
#include <sstream>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"

namespace tandem {
namespace {

class Table {
 public:
  Table(const toml::table* t, std::string name, std::string source)
      : t_(t), name_(std::move(name)), source_(std::move(source)) {}

  template <typename T>
  void get(const char* key, T& out, bool required) {
    seen_.insert(key);
    const toml::node* n = t_ ? t_->get(key) : nullptr;
    if (!n) {
      if (required) bad(key, "is missing");
      return;
    }
    if constexpr (std::is_same_v<T, bool>) {
      if (!n->is_boolean()) bad(key, "must be true or false");
      out = n->value<bool>().value();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!n->is_string()) bad(key, "must be a string");
      out = n->value<std::string>().value();
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!n->is_number()) bad(key, "must be a number");
      out = static_cast<T>(n->value<double>().value());
    } else {
      if (!n->is_integer()) bad(key, "must be an integer");
      int64_t v = n->value<int64_t>().value();
      if (v < 0) bad(key, "must not be negative");
      if (static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max()))
        bad(key, "is too large");
      out = static_cast<T>(v);
    }
  }

  bool has(const char* key) const { return t_ && t_->get(key) != nullptr; }

  // Any key not read by get() is a typo or a key from another version: refuse it.
  void check_unknown() const {
    if (!t_) return;
    for (const auto& [k, v] : *t_)
      if (!seen_.count(std::string(k.str())))
        fail("[config] " + source_ + ": unknown key '" + name_ + "." + std::string(k.str()) + "'");
  }

 private:
  [[noreturn]] void bad(const char* key, const std::string& why) const {
    fail("[config] " + source_ + ": key '" + name_ + "." + key + "' " + why);
  }
  const toml::table* t_;
  std::string name_, source_;
  std::set<std::string> seen_;
};

}  // namespace

RunConfig parse_run_config(const std::string& text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    auto where = e.source().begin;
    fail("[config] " + source + ":" + std::to_string(where.line) + ":" +
         std::to_string(where.column) + ": " + std::string(e.description()));
  }
  for (const auto& [k, v] : root) {
    std::string key(k.str());
    static const std::set<std::string> kTables = {"model", "data",  "train",     "checkpoint",
                                                  "guard", "supervisor", "run", "sft",
                                                  "grpo"};
    if (!kTables.count(key))
      fail("[config] " + source + ": unknown table '" + key +
           "' (expected model, data, train, checkpoint, guard, supervisor, run, sft, grpo)");
    if (!v.is_table()) fail("[config] " + source + ": '" + key + "' must be a table");
  }
  if (!root["model"].as_table()) fail("[config] " + source + ": missing table [model]");
  RunConfig rc;
  rc.source = source;
  rc.text = text;

  Table m(root["model"].as_table(), "model", source);
  ModelConfig& mc = rc.model;
  m.get("dim", mc.dim, true);
  m.get("n_layers", mc.n_layers, true);
  m.get("n_heads", mc.n_heads, true);
  mc.n_kv_heads = mc.n_heads;
  m.get("n_kv_heads", mc.n_kv_heads, false);
  m.get("hidden_dim", mc.hidden_dim, true);
  m.get("vocab_size", mc.vocab_size, true);
  m.get("context", mc.context, true);
  m.get("tie_embeddings", mc.tie_embeddings, false);
  m.get("rope_theta", mc.rope_theta, false);
  m.get("norm_eps", mc.norm_eps, false);
  m.check_unknown();
  mc.validate();

  Table d(root["data"].as_table(), "data", source);
  d.get("dir", rc.data_dir, false);
  d.check_unknown();

  Table t(root["train"].as_table(), "train", source);
  TrainConfig& tc = rc.train;
  t.get("batch_size", tc.batch_size, false);
  t.get("seq_len", tc.seq_len, false);
  t.get("grad_accum", tc.grad_accum, false);
  t.get("max_steps", tc.max_steps, false);
  t.get("lr", tc.lr, false);
  t.get("min_lr", tc.min_lr, false);
  t.get("warmup_steps", tc.warmup_steps, false);
  t.get("weight_decay", tc.weight_decay, false);
  t.get("beta1", tc.beta1, false);
  t.get("beta2", tc.beta2, false);
  t.get("eps", tc.eps, false);
  t.get("grad_clip", tc.grad_clip, false);
  t.get("eval_every", tc.eval_every, false);
  t.get("eval_batches", tc.eval_batches, false);
  t.get("log_every", tc.log_every, false);
  t.get("seed", tc.seed, false);
  t.get("threads", tc.threads, false);
  t.get("backend", tc.backend, false);
  // Keys from before [checkpoint] existed, still read so older runs' configs load.
  int64_t legacy_every = -1;
  int legacy_keep = -1;
  t.get("checkpoint_every", legacy_every, false);
  t.get("keep_checkpoints", legacy_keep, false);
  t.check_unknown();

  Table c(root["checkpoint"].as_table(), "checkpoint", source);
  CheckpointConfig& cc = rc.checkpoint;
  c.get("every_steps", cc.every_steps, false);
  c.get("every_seconds", cc.every_seconds, false);
  c.get("keep_last", cc.keep_last, false);
  c.get("keep_every", cc.keep_every, false);
  c.get("snapshot_every", cc.snapshot_every, false);
  c.check_unknown();
  if (legacy_every >= 0 && !c.has("every_steps")) {
    cc.every_steps = legacy_every;
    if (!c.has("every_seconds")) cc.every_seconds = 0;
  }
  if (legacy_keep >= 0 && !c.has("keep_last")) cc.keep_last = legacy_keep;

  Table g(root["guard"].as_table(), "guard", source);
  GuardConfig& gc = rc.guard;
  g.get("enabled", gc.enabled, false);
  g.get("window", gc.window, false);
  g.get("min_history", gc.min_history, false);
  g.get("loss_z", gc.loss_z, false);
  g.get("grad_z", gc.grad_z, false);
  g.get("max_rollbacks", gc.max_rollbacks, false);
  g.get("fingerprint_every", gc.fingerprint_every, false);
  g.get("replay_check_every", gc.replay_check_every, false);
  g.get("skip_bad_batches", gc.skip_bad_batches, false);
  const bool skip_set = g.has("skip_bad_batches");
  g.check_unknown();

  Table s(root["supervisor"].as_table(), "supervisor", source);
  SupervisorConfig& sc = rc.supervisor;
  s.get("max_restarts", sc.max_restarts, false);
  s.get("max_failures", sc.max_failures, false);
  s.get("backoff_s", sc.backoff_s, false);
  s.get("backoff_max_s", sc.backoff_max_s, false);
  s.get("hang_factor", sc.hang_factor, false);
  s.get("hang_min_s", sc.hang_min_s, false);
  s.get("startup_timeout_s", sc.startup_timeout_s, false);
  s.get("collective_timeout_s", sc.collective_timeout_s, false);
  s.get("min_ranks", sc.min_ranks, false);
  s.get("regroup_settle_s", sc.regroup_settle_s, false);
  s.get("straggler_factor", sc.straggler_factor, false);
  s.get("straggler_window", sc.straggler_window, false);
  s.check_unknown();

  Table r(root["run"].as_table(), "run", source);
  r.get("out_dir", rc.out_dir, false);
  r.check_unknown();

  if (const toml::table* st = root["sft"].as_table()) {
    Table f(st, "sft", source);
    SftConfig& sf = rc.sft;
    sf.enabled = true;
    f.get("init", sf.init, true);
    f.get("train", sf.train, true);
    f.get("val", sf.val, false);
    f.get("loss_on", sf.loss_on, false);
    f.get("pack", sf.pack, false);
    f.get("eval_prompts", sf.eval_prompts, false);
    f.get("eval_verifier", sf.eval_verifier, false);
    f.get("eval_pattern", sf.eval_pattern, false);
    f.get("eval_limit", sf.eval_limit, false);
    f.get("eval_max_new_tokens", sf.eval_max_new_tokens, false);
    if (sf.eval_limit < 0 || sf.eval_max_new_tokens < 1)
      fail("[config] " + source + ": keys 'sft.eval_limit' (>= 0) and 'sft.eval_max_new_tokens' "
           "(>= 1) are out of range");
    f.check_unknown();
    if (!skip_set) gc.skip_bad_batches = false;
    if (sf.loss_on != "assistant" && sf.loss_on != "all")
      fail("[config] " + source + ": key 'sft.loss_on' must be \"assistant\" or \"all\"");
  }

  if (const toml::table* gt = root["grpo"].as_table()) {
    if (rc.sft.enabled)
      fail("[config] " + source + ": [sft] and [grpo] are two kinds of run: use one per config");
    Table f(gt, "grpo", source);
    GrpoConfig& g = rc.grpo;
    g.enabled = true;
    f.get("init", g.init, true);
    f.get("ref", g.ref, false);
    f.get("prompts", g.prompts, true);
    f.get("val", g.val, false);
    f.get("val_limit", g.val_limit, false);
    f.get("loss", g.loss, false);
    f.get("group_size", g.group_size, false);
    f.get("prompts_per_step", g.prompts_per_step, false);
    f.get("max_new_tokens", g.max_new_tokens, false);
    f.get("temperature", g.temperature, false);
    f.get("top_k", g.top_k, false);
    f.get("top_p", g.top_p, false);
    f.get("clip_low", g.clip_low, false);
    f.get("clip_high", g.clip_high, false);
    f.get("beta", g.beta, false);
    f.get("passes", g.passes, false);
    bool ds = false, om = false;
    if (gt->contains("dynamic_sampling")) f.get("dynamic_sampling", ds, false), g.dynamic_sampling = ds;
    if (gt->contains("overlong_mask")) f.get("overlong_mask", om, false), g.overlong_mask = om;
    f.get("max_resample", g.max_resample, false);
    f.get("rollout_slots", g.rollout_slots, false);
    f.get("verifier", g.verifier, false);
    f.get("pattern", g.pattern, false);
    f.get("command", g.command, false);
    f.get("timeout_s", g.timeout_s, false);
    f.get("on_error", g.on_error, false);
    f.get("format_pattern", g.format_pattern, false);
    f.get("format_weight", g.format_weight, false);
    f.check_unknown();
    auto bad = [&](bool ok, const char* key, const std::string& what) {
      if (!ok) fail("[config] " + source + ": key 'grpo." + key + "' " + what);
    };
    bad(g.loss == "grpo" || g.loss == "dr_grpo" || g.loss == "dapo", "loss",
        "must be \"grpo\", \"dr_grpo\" or \"dapo\", not \"" + g.loss + "\"");
    const bool dapo = g.loss == "dapo";
    if (g.clip_high < 0) g.clip_high = dapo ? 0.28 : g.clip_low;
    if (g.dynamic_sampling < 0) g.dynamic_sampling = dapo;
    if (g.overlong_mask < 0) g.overlong_mask = dapo;
    bad(g.group_size >= 2, "group_size", "must be at least 2 (advantages compare a group)");
    bad(g.prompts_per_step >= 1, "prompts_per_step", "must be positive");
    bad(g.max_new_tokens >= 1, "max_new_tokens", "must be positive");
    bad(g.temperature > 0, "temperature", "must be positive (rollouts sample the policy)");
    bad(g.top_k >= 0, "top_k", "must be >= 0");
    bad(g.top_p > 0 && g.top_p <= 1, "top_p", "must be in (0, 1]");
    bad(g.clip_low > 0 && g.clip_low < 1, "clip_low", "must be in (0, 1)");
    bad(g.clip_high > 0, "clip_high", "must be positive");
    bad(g.beta >= 0, "beta", "must not be negative");
    bad(g.passes >= 1, "passes", "must be positive");
    bad(g.max_resample >= 1, "max_resample", "must be positive");
    bad(g.rollout_slots >= 0, "rollout_slots", "must be >= 0");
    bad(g.val_limit >= 0, "val_limit", "must be >= 0");
    bad(g.on_error == "stop" || g.on_error == "zero", "on_error", "must be \"stop\" or \"zero\"");
    bad(g.timeout_s > 0, "timeout_s", "must be positive");
    // A step's rollouts are its batch: grad_accum micro-batches of batch_size rows hold them.
    const int rows = g.prompts_per_step * g.group_size;
    tc.grad_accum = (rows + tc.batch_size - 1) / tc.batch_size;
    if (!skip_set) gc.skip_bad_batches = false;
  }

  auto need = [&](bool ok, const std::string& what) {
    if (!ok) fail("[config] " + source + ": key 'train." + what);
  };
  need(tc.batch_size > 0, "batch_size' must be positive");
  need(tc.seq_len > 0, "seq_len' must be positive");
  need(tc.seq_len <= mc.context,
       "seq_len' must not exceed model.context (" + std::to_string(mc.context) + ")");
  need(tc.grad_accum > 0, "grad_accum' must be positive");
  need(tc.max_steps > 0, "max_steps' must be positive");
  need(tc.lr > 0, "lr' must be positive");
  need(tc.min_lr >= 0 && tc.min_lr <= tc.lr, "min_lr' must be between 0 and train.lr");
  need(tc.beta1 >= 0 && tc.beta1 < 1, "beta1' must be in [0, 1)");
  need(tc.beta2 >= 0 && tc.beta2 < 1, "beta2' must be in [0, 1)");
  need(tc.eps > 0, "eps' must be positive");
  need(tc.eval_batches > 0, "eval_batches' must be positive");
  need(tc.log_every > 0, "log_every' must be positive");
  auto need_in = [&](bool ok, const std::string& key, const char* what) {
    if (!ok) fail("[config] " + source + ": key '" + key + "' " + what);
  };
  need_in(cc.every_seconds >= 0, "checkpoint.every_seconds", "must not be negative");
  need_in(cc.snapshot_every > 0, "checkpoint.snapshot_every", "must be positive");
  need_in(gc.window >= 3, "guard.window", "must be at least 3");
  need_in(gc.min_history >= 3 && gc.min_history <= gc.window, "guard.min_history",
          "must be between 3 and guard.window");
  need_in(gc.loss_z > 0, "guard.loss_z", "must be positive");
  need_in(gc.grad_z > 0, "guard.grad_z", "must be positive");
  need_in(gc.max_rollbacks > 0, "guard.max_rollbacks", "must be positive");
  need_in(sc.max_failures > 0, "supervisor.max_failures", "must be positive");
  need_in(sc.backoff_s >= 0, "supervisor.backoff_s", "must not be negative");
  need_in(sc.backoff_max_s >= sc.backoff_s, "supervisor.backoff_max_s",
          "must be at least supervisor.backoff_s");
  need_in(sc.hang_factor >= 1, "supervisor.hang_factor", "must be at least 1");
  need_in(sc.hang_min_s > 0, "supervisor.hang_min_s", "must be positive");
  need_in(sc.startup_timeout_s > 0, "supervisor.startup_timeout_s", "must be positive");
  need_in(sc.collective_timeout_s > 0, "supervisor.collective_timeout_s", "must be positive");
  need_in(sc.min_ranks >= 0, "supervisor.min_ranks", "must be >= 0");
  need_in(sc.regroup_settle_s > 0, "supervisor.regroup_settle_s", "must be positive");
  need_in(sc.straggler_factor == 0 || sc.straggler_factor > 1, "supervisor.straggler_factor",
          "must be 0 (off) or greater than 1");
  need_in(sc.straggler_window >= 1, "supervisor.straggler_window", "must be >= 1");
  return rc;
}

namespace {
// TOML text of a flat table; floats in their shortest form that reads back to the same float.
class TomlWriter {
 public:
  void table(const char* name) { out_ << (out_.tellp() > 0 ? "\n[" : "[") << name << "]\n"; }
  void put(const char* k, int64_t v) { out_ << k << " = " << v << "\n"; }
  void put(const char* k, int v) { put(k, (int64_t)v); }
  void put(const char* k, bool v) { out_ << k << " = " << (v ? "true" : "false") << "\n"; }
  void put(const char* k, double v) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    std::string f(buf, r.ptr);
    if (f.find_first_of(".eEn") == std::string::npos) f += ".0";
    out_ << k << " = " << f << "\n";
  }
  void put(const char* k, float v) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    std::string f(buf, r.ptr);
    if (f.find_first_of(".eEn") == std::string::npos) f += ".0";  // keep it a TOML float
    out_ << k << " = " << f << "\n";
  }
  void put(const char* k, const std::string& v) {
    out_ << k << " = " << toml::value<std::string>(v) << "\n";  // quoted and escaped
  }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};
}  // namespace

std::string run_config_toml(const RunConfig& rc) {
  const ModelConfig& m = rc.model;
  const TrainConfig& t = rc.train;
  TomlWriter w;
  w.table("model");
  w.put("dim", m.dim);
  w.put("n_layers", m.n_layers);
  w.put("n_heads", m.n_heads);
  w.put("n_kv_heads", m.n_kv_heads);
  w.put("hidden_dim", m.hidden_dim);
  w.put("vocab_size", m.vocab_size);
  w.put("context", m.context);
  w.put("tie_embeddings", m.tie_embeddings);
  w.put("rope_theta", m.rope_theta);
  w.put("norm_eps", m.norm_eps);
  w.table("data");
  w.put("dir", rc.data_dir);
  w.table("train");
  w.put("batch_size", t.batch_size);
  w.put("seq_len", t.seq_len);
  w.put("grad_accum", t.grad_accum);
  w.put("max_steps", t.max_steps);
  w.put("lr", t.lr);
  w.put("min_lr", t.min_lr);
  w.put("warmup_steps", t.warmup_steps);
  w.put("weight_decay", t.weight_decay);
  w.put("beta1", t.beta1);
  w.put("beta2", t.beta2);
  w.put("eps", t.eps);
  w.put("grad_clip", t.grad_clip);
  w.put("eval_every", t.eval_every);
  w.put("eval_batches", t.eval_batches);
  w.put("log_every", t.log_every);
  w.put("seed", (int64_t)t.seed);
  w.put("threads", t.threads);
  w.put("backend", t.backend);
  const CheckpointConfig& c = rc.checkpoint;
  w.table("checkpoint");
  w.put("every_steps", c.every_steps);
  w.put("every_seconds", c.every_seconds);
  w.put("keep_last", c.keep_last);
  w.put("keep_every", c.keep_every);
  w.put("snapshot_every", c.snapshot_every);
  const GuardConfig& g = rc.guard;
  w.table("guard");
  w.put("enabled", g.enabled);
  w.put("window", g.window);
  w.put("min_history", g.min_history);
  w.put("loss_z", g.loss_z);
  w.put("grad_z", g.grad_z);
  w.put("max_rollbacks", g.max_rollbacks);
  w.put("fingerprint_every", g.fingerprint_every);
  w.put("replay_check_every", g.replay_check_every);
  w.put("skip_bad_batches", g.skip_bad_batches);
  const SupervisorConfig& s = rc.supervisor;
  w.table("supervisor");
  w.put("max_restarts", s.max_restarts);
  w.put("max_failures", s.max_failures);
  w.put("backoff_s", s.backoff_s);
  w.put("backoff_max_s", s.backoff_max_s);
  w.put("hang_factor", s.hang_factor);
  w.put("hang_min_s", s.hang_min_s);
  w.put("startup_timeout_s", s.startup_timeout_s);
  w.put("collective_timeout_s", s.collective_timeout_s);
  w.put("min_ranks", s.min_ranks);
  w.put("regroup_settle_s", s.regroup_settle_s);
  w.put("straggler_factor", s.straggler_factor);
  w.put("straggler_window", s.straggler_window);
  w.table("run");
  w.put("out_dir", rc.out_dir);
  if (rc.sft.enabled) {
    w.table("sft");
    w.put("init", rc.sft.init);
    w.put("train", rc.sft.train);
    w.put("val", rc.sft.val);
    w.put("loss_on", rc.sft.loss_on);
    w.put("pack", rc.sft.pack);
    w.put("eval_prompts", rc.sft.eval_prompts);
    w.put("eval_verifier", rc.sft.eval_verifier);
    w.put("eval_pattern", rc.sft.eval_pattern);
    w.put("eval_limit", rc.sft.eval_limit);
    w.put("eval_max_new_tokens", rc.sft.eval_max_new_tokens);
  }
  if (rc.grpo.enabled) {
    const GrpoConfig& g = rc.grpo;
    w.table("grpo");
    w.put("init", g.init);
    w.put("ref", g.ref);
    w.put("prompts", g.prompts);
    w.put("val", g.val);
    w.put("val_limit", g.val_limit);
    w.put("loss", g.loss);
    w.put("group_size", g.group_size);
    w.put("prompts_per_step", g.prompts_per_step);
    w.put("max_new_tokens", g.max_new_tokens);
    w.put("temperature", g.temperature);
    w.put("top_k", g.top_k);
    w.put("top_p", g.top_p);
    w.put("clip_low", g.clip_low);
    w.put("clip_high", g.clip_high);
    w.put("beta", g.beta);
    w.put("passes", g.passes);
    w.put("dynamic_sampling", g.dynamic_sampling != 0);
    w.put("max_resample", g.max_resample);
    w.put("overlong_mask", g.overlong_mask != 0);
    w.put("rollout_slots", g.rollout_slots);
    w.put("verifier", g.verifier);
    w.put("pattern", g.pattern);
    w.put("command", g.command);
    w.put("timeout_s", g.timeout_s);
    w.put("on_error", g.on_error);
    w.put("format_pattern", g.format_pattern);
    w.put("format_weight", g.format_weight);
  }
  return "# Effective configuration of this run (file values with command-line overrides).\n" +
         w.str();
}

RunConfig load_run_config(const std::string& path) {
  if (!path_exists(path)) fail("[config] config file '" + path + "' does not exist");
  return parse_run_config(read_file(path), path);
}

}  // namespace tandem
