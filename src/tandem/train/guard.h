// The numerical fault guard: judges a step's loss and gradient norm before its update is
// committed. Non-finite values always fail; a spike is a robust z-score (median and MAD of the
// recent window, robust to a falling trend) above the configured threshold. The window is run state: it is checkpointed,
// so a resumed run makes the same decisions as an uninterrupted one.
#pragma once

#include <deque>
#include <nlohmann/json.hpp>
#include <string>

#include "tandem/ckpt/config.h"

namespace tandem {

struct GuardVerdict {
  bool ok = true;
  std::string kind;  // "non_finite", "loss_spike" or "grad_spike" when !ok
  double score = 0;  // the robust z-score that tripped (0 for non_finite)
};

// How far x sits above the recent level, in units of the history's step-to-step noise:
// (x - median of the newest 10) / (1.4826 * MAD of successive differences / sqrt 2). The scale
// is floored at 1e-3 * |level| so a perfectly flat history does not make every wobble a spike.
double robust_z(const std::deque<double>& history, double x);

class Guard {
 public:
  explicit Guard(const GuardConfig& cfg) : cfg_(cfg) {}
  GuardVerdict check(double loss, double grad_norm) const;
  void accept(double loss, double grad_norm);  // a committed step joins the window
  nlohmann::json to_json() const;
  void from_json(const nlohmann::json& j);  // throws Error on a malformed record
  size_t history_size() const { return loss_.size(); }

 private:
  GuardConfig cfg_;
  std::deque<double> loss_, grad_;
};

}  // namespace tandem
