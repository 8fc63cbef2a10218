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
  const size_t n = history.size();
  if (n < 3) return 0;
  // The level is the median of the newest few values, so a loss that is still falling fast is
  // judged against where it is now; the noise is the MAD of step-to-step differences (divided by
  // sqrt 2), which a steady trend does not inflate.
  const size_t k = std::min<size_t>(n, 10);
  const double level = median_of(std::vector<double>(history.end() - k, history.end()));
  std::vector<double> d(n - 1);
  for (size_t i = 0; i + 1 < n; ++i) d[i] = history[i + 1] - history[i];
  const double dmed = median_of(d);
  for (double& v : d) v = std::fabs(v - dmed);
  const double noise = 1.4826 * median_of(std::move(d)) / std::sqrt(2.0);
  const double scale = std::max({noise, 1e-3 * std::fabs(level), 1e-12});
  return (x - level) / scale;
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
