// Strict TOML parsing of run configs on toml++.
#include "tandem/train/config.h"

#include <toml++/toml.h>

#include <set>

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
      out = static_cast<T>(v);
    }
  }

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
    if (key != "model" && key != "data" && key != "train" && key != "run")
      fail("[config] " + source + ": unknown table '" + key +
           "' (expected model, data, train, run)");
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
  t.get("checkpoint_every", tc.checkpoint_every, false);
  t.get("keep_checkpoints", tc.keep_checkpoints, false);
  t.get("log_every", tc.log_every, false);
  t.get("seed", tc.seed, false);
  t.get("threads", tc.threads, false);
  t.get("backend", tc.backend, false);
  t.check_unknown();

  Table r(root["run"].as_table(), "run", source);
  r.get("out_dir", rc.out_dir, false);
  r.check_unknown();

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
  return rc;
}

RunConfig load_run_config(const std::string& path) {
  if (!path_exists(path)) fail("[config] config file '" + path + "' does not exist");
  return parse_run_config(read_file(path), path);
}

}  // namespace tandem
