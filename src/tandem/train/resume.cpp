// restore_start_state (see resume.h).
#include "tandem/train/resume.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "tandem/backend/backend.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/model/llama.h"
#include "tandem/ckpt/checkpoint.h"
#include "tandem/train/data_parallel.h"
#include "tandem/train/events.h"
#include "tandem/train/faults.h"
#include "tandem/train/optimizer.h"
#include "tandem/train/run_state.h"
#include "tandem/train/snapshot.h"

namespace tandem {
namespace {
bool same_architecture(const ModelConfig& a, const ModelConfig& b) {
  return a.dim == b.dim && a.n_layers == b.n_layers && a.n_heads == b.n_heads &&
         a.n_kv_heads == b.n_kv_heads && a.hidden_dim == b.hidden_dim &&
         a.vocab_size == b.vocab_size && a.tie_embeddings == b.tie_embeddings &&
         a.rope_theta == b.rope_theta && a.norm_eps == b.norm_eps;
}
}  // namespace

void check_resumable(const RunConfig& ck, const RunConfig& now, const std::string& dir) {
  if (!same_architecture(ck.model, now.model))
    fail("[train] checkpoint " + dir + " was trained with a different [model] config");
  if (ck.train.seed != now.train.seed)
    fail("[train] checkpoint " + dir + " was trained with train.seed = " +
         std::to_string(ck.train.seed) + ", the config says " + std::to_string(now.train.seed));
  if (ck.train.batch_size != now.train.batch_size || ck.train.seq_len != now.train.seq_len ||
      ck.train.grad_accum != now.train.grad_accum)
    std::fprintf(stderr,
                 "[train] warning: batch_size, seq_len or grad_accum differ from %s; the run "
                 "continues but is no longer comparable bit for bit with an uninterrupted one\n",
                 dir.c_str());
}

std::string resolve_init(const RunConfig& cfg, const std::string& init, const std::string& key,
                         const std::string& tokenizer_sha256, const std::string& tokenizer_path) {
  const std::string tag = "[" + key.substr(0, key.find('.')) + "] " + key;
  std::string dir = init;
  if (!path_exists(init + "/manifest.json")) {
    std::optional<std::string> newest;
    if (path_exists(init)) newest = latest_checkpoint(init, nullptr, nullptr);
    if (!newest)
      fail(tag + " = '" + init + "' is neither a checkpoint nor a run directory with one");
    dir = *newest;
  }
  const nlohmann::json man = read_manifest(dir);
  const RunConfig base = parse_run_config(man["config"].get<std::string>(), dir + "/manifest.json");
  if (!same_architecture(base.model, cfg.model))
    fail(tag + " " + dir + " has another architecture than [model] (" +
         base.model.summary() + " vs " + cfg.model.summary() + ")");
  if (man["tokenizer_sha256"].get<std::string>() != tokenizer_sha256)
    fail(tag + " " + dir + " was trained with another tokenizer than " + tokenizer_path);
  return dir;
}

std::string resolve_sft_init(const RunConfig& cfg, const std::string& tokenizer_sha256,
                             const std::string& tokenizer_path) {
  if (cfg.grpo.enabled)
    return resolve_init(cfg, cfg.grpo.init, "grpo.init", tokenizer_sha256, tokenizer_path);
  return resolve_init(cfg, cfg.sft.init, "sft.init", tokenizer_sha256, tokenizer_path);
}

StartPoint restore_start_state(const StartInputs& in, SnapshotStore& snap, Llama& model,
                               AdamW& opt, RunState& state, EventLog& events, FaultPlan& faults,
                               const RankGroup& group) {
  Backend& be = model.backend();
  const size_t P = model.num_params();
  std::optional<nlohmann::json> mem;
  if (in.resume) {
    if (auto meta = snap.latest_meta()) {
      try {
        auto j = nlohmann::json::parse(*meta);
        check_resumable(parse_run_config(j.at("config").get<std::string>(), "snapshot"), in.cfg,
                        "in-memory snapshot");
        if (j.at("tokenizer_sha256").get<std::string>() == in.tokenizer_sha256 &&
            j.at("step").get<int64_t>() > in.disk_step)
          mem = j;
      } catch (const std::exception& e) {
        events.emit("snapshot_rejected", {{"reason", e.what()}});
      }
    }
  }
  if (const Fault* f = faults.fire(FaultKind::kCrashResume, 0))
    faults.crash_now(*f, "loading the saved state");
  StartPoint sp;
  sp.from_snapshot = mem.has_value();
  if (mem) {
    snap.restore(be, model.params(), opt.m(), opt.v());
    state.step = (*mem)["step"].get<int64_t>();
    state.samples = (*mem)["samples"].get<int64_t>();
    state.load_extra(*mem, true);
    sp.from = "memory";
    events.emit("resumed", {{"from", "memory"}, {"step", state.step}, {"disk_step", in.disk_step}});
  } else if (in.latest) {
    const std::string& dir = *in.latest;
    CheckpointData ck = load_checkpoint(dir, model.layout(), true);
    check_resumable(parse_run_config(ck.state.config_text, dir + "/manifest.json"), in.cfg, dir);
    if (ck.state.tokenizer_sha256 != in.tokenizer_sha256)
      fail("[train] checkpoint " + dir + " was trained with a different tokenizer than " +
           in.tokenizer_path);
    model.load_params(ck.params.data());
    be.to_device(opt.m(), ck.m.data(), P * sizeof(float));
    be.to_device(opt.v(), ck.v.data(), P * sizeof(float));
    state.step = ck.state.step;
    state.samples = ck.state.samples_consumed;
    state.load_extra(ck.state.extra, true);
    sp.from = dir;
    events.emit("resumed", {{"from", "checkpoint"}, {"dir", dir}, {"step", state.step}});
  } else if (!in.init_dir.empty()) {
    // Fine-tuning starts from another run's weights (the optimizer starts afresh).
    const std::string& dir = in.init_dir;
    CheckpointData ck = load_checkpoint(dir, model.layout(), false);
    model.load_params(ck.params.data());
    events.emit("initialized", {{"from", dir}, {"step", ck.state.step}});
  } else {
    model.init(in.cfg.train.seed);
  }
  if (!group.comm()) return sp;
  // Every rank starts the group from the newest state any of them has (the others' copies of
  // a replicated state are equal or older).
  const int64_t have = !sp.from.empty() ? state.step : -1;
  std::vector<float> p, m, v;
  auto host_state = [&]() -> std::vector<float*> {
    p.resize(P), m.resize(P), v.resize(P);
    be.to_host(p.data(), model.params(), P * sizeof(float));
    be.to_host(m.data(), opt.m(), P * sizeof(float));
    be.to_host(v.data(), opt.v(), P * sizeof(float));
    return {p.data(), m.data(), v.data()};
  };
  std::string meta = in.meta();
  const int64_t got = group.share_state(have, host_state, P, meta);
  if (got >= 0 && got != have) {
    model.load_params(p.data());
    be.to_device(opt.m(), m.data(), P * sizeof(float));
    be.to_device(opt.v(), v.data(), P * sizeof(float));
    auto j = nlohmann::json::parse(meta);
    state.step = j["step"].get<int64_t>();
    state.samples = j["samples"].get<int64_t>();
    state.load_extra(j, true);
    sp.from = "rank";
    sp.from_snapshot = false;
  }
  return sp;
}

}  // namespace tandem
