// The run's state besides tensors (step, data cursor, guard window, skipped batches, the
// gradient sum's scales), as it travels in checkpoint manifests and in-memory snapshots.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "tandem/core/error.h"
#include "tandem/train/guard.h"

namespace tandem {

// The run's state besides tensors: the step, the data cursor, the guard's window and the
// batches skipped as bad data. It travels in checkpoints (manifest "extra") and snapshots.
struct RunState {
  struct Skip {
    int64_t step, samples;
  };
  int64_t step = 0, samples = 0;
  Guard guard;
  std::vector<Skip> skipped;  // survives rollbacks: a batch found bad stays skipped
  std::vector<int> grad_exp;  // the fixed-point scales of the next step's gradient sum
  nlohmann::json source;      // a StepSource's own state (GRPO: rollouts between passes)

  explicit RunState(const GuardConfig& g) : guard(g) {}
  bool is_skipped(int64_t s) const {
    for (const Skip& k : skipped)
      if (k.samples == s) return true;
    return false;
  }
  nlohmann::json extra() const {
    nlohmann::json sk = nlohmann::json::array();
    for (const Skip& k : skipped) sk.push_back({{"step", k.step}, {"samples", k.samples}});
    nlohmann::json j = {{"guard", guard.to_json()}, {"skipped_batches", sk},
                        {"grad_exponents", grad_exp}};
    if (!source.is_null()) j["source"] = source;
    return j;
  }
  void load_extra(const nlohmann::json& e, bool with_skipped) {
    if (e.contains("guard")) guard.from_json(e["guard"]);
    if (e.contains("grad_exponents")) {
      if (!e["grad_exponents"].is_array())
        fail("[train] malformed grad_exponents in the saved state");
      grad_exp = e["grad_exponents"].get<std::vector<int>>();
    }
    source = e.contains("source") ? e["source"] : nlohmann::json();
    if (!with_skipped || !e.contains("skipped_batches")) return;
    const auto& sk = e["skipped_batches"];
    if (!sk.is_array()) fail("[train] malformed skipped_batches in the saved state");
    for (const auto& k : sk) {
      if (!k.is_object() || !k.contains("step") || !k.contains("samples") ||
          !k["step"].is_number_integer() || !k["samples"].is_number_integer())
        fail("[train] malformed skipped_batches in the saved state");
      if (!is_skipped(k["samples"].get<int64_t>()))
        skipped.push_back({k["step"].get<int64_t>(), k["samples"].get<int64_t>()});
    }
  }
};

}  // namespace tandem
