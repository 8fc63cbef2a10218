// Guard: robust spike scores over a sliding window.
#include "tandem/train/guard.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "tandem/core/error.h"

namespace tandem {

namespace {
double median_of(std::vector<double> v) {
  const size_t n = v.size(), h = n / 2;
  std::nth_element(v.begin(), v.begin() + h, v.end());
  double hi = v[h];
  if (n % 2) return hi;
  return 0.5 * (hi + *std::max_element(v.begin(), v.begin() + h));
}
}  // namespace

double robust_z(const std::deque<double>& history, double x) {
  if (history.empty()) return 0;
  std::vector<double> v(history.begin(), history.end());
  const double med = median_of(v);
  for (double& d : v) d = std::fabs(d - med);
  const double mad = median_of(std::move(v));
  const double scale = std::max({1.4826 * mad, 1e-3 * std::fabs(med), 1e-12});
  return (x - med) / scale;
}

GuardVerdict Guard::check(double loss, double grad_norm) const {
  GuardVerdict v;
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    v.ok = false;
    v.kind = "non_finite";
    return v;
  }
  if (!cfg_.enabled || (int)loss_.size() < cfg_.min_history) return v;
  const double zl = robust_z(loss_, loss), zg = robust_z(grad_, grad_norm);
  if (zl > cfg_.loss_z) {
    v.ok = false;
    v.kind = "loss_spike";
    v.score = zl;
  } else if (zg > cfg_.grad_z) {
    v.ok = false;
    v.kind = "grad_spike";
    v.score = zg;
  }
  return v;
}

void Guard::accept(double loss, double grad_norm) {
  loss_.push_back(loss);
  grad_.push_back(grad_norm);
  while ((int)loss_.size() > cfg_.window) {
    loss_.pop_front();
    grad_.pop_front();
  }
}

nlohmann::json Guard::to_json() const {
  return {{"loss", std::vector<double>(loss_.begin(), loss_.end())},
          {"grad_norm", std::vector<double>(grad_.begin(), grad_.end())}};
}

void Guard::from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("loss") || !j.contains("grad_norm") ||
      !j["loss"].is_array() || !j["grad_norm"].is_array() ||
      j["loss"].size() != j["grad_norm"].size())
    fail("[guard] malformed guard history in the saved state");
  loss_.clear();
  grad_.clear();
  for (size_t i = 0; i < j["loss"].size(); ++i) {
    if (!j["loss"][i].is_number() || !j["grad_norm"][i].is_number())
      fail("[guard] malformed guard history in the saved state");
    accept(j["loss"][i].get<double>(), j["grad_norm"][i].get<double>());
  }
}

}  // namespace tandem
