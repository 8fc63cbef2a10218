// StragglerWatch (see straggler.h).
#include "tandem/train/straggler.h"

#include <algorithm>

namespace tandem {
namespace {
template <class C>
double median_of(const C& c) {
  std::vector<double> v(c.begin(), c.end());
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
}  // namespace

std::vector<StragglerWatch::Change> StragglerWatch::observe(const std::vector<double>& t) {
  std::vector<Change> out;
  const size_t W = t.size();
  if (factor_ <= 0 || W < 2) return out;
  if (ratio_.size() != W) {
    ratio_.assign(W, {});
    secs_.assign(W, {});
    others_.assign(W, {});
    slow_.assign(W, false);
  }
  for (size_t r = 0; r < W; ++r) {
    std::vector<double> rest;
    for (size_t q = 0; q < W; ++q)
      if (q != r) rest.push_back(t[q]);
    const double others = median_of(rest);
    for (auto* d : {&ratio_[r], &secs_[r], &others_[r]})
      if ((int)d->size() == window_) d->pop_front();
    ratio_[r].push_back(others > 0 ? t[r] / others : 1.0);
    secs_[r].push_back(t[r]);
    others_[r].push_back(others);
    if ((int)ratio_[r].size() < window_) continue;
    const double m = median_of(ratio_[r]);
    const bool now_slow = m > factor_;
    if (now_slow == slow_[r]) continue;
    slow_[r] = now_slow;
    out.push_back({(int)r, now_slow, m, median_of(secs_[r]), median_of(others_[r])});
  }
  return out;
}

}  // namespace tandem
