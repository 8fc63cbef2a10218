// Fixed-point accumulation of shard gradients. Rounding is to nearest (ties to even) in
// double, clamped so an out-of-window value cannot overflow before accept() rejects it.
#include "tandem/dist/exact_sum.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tandem/core/error.h"

namespace tandem {
namespace {

constexpr int kTotalBits = 62;  // |sum| < 2^62: int64 with a bit to spare

int ceil_log2(int n) {
  int b = 0;
  while ((1 << b) < n) ++b;
  return b;
}

}  // namespace

ExactGradSum::ExactGradSum(std::vector<std::pair<size_t, size_t>> segments, int shards)
    : seg_(std::move(segments)), shard_bits_(ceil_log2(std::max(1, shards))) {
  size_t total = 0;
  for (const auto& [off, n] : seg_) total = std::max(total, off + n);
  acc_.assign(total, 0);
  max_.assign(seg_.size(), 0.0);
  // Before any gradient is known: as if every tensor's largest value were 1.
  exp_.assign(seg_.size(), fitted_exponent(1.0));
}

void ExactGradSum::set_exponents(const std::vector<int>& e) {
  TANDEM_CHECK(e.size() == seg_.size(), "exponent count");
  exp_ = e;
}

int ExactGradSum::fitted_exponent(double max) const {
  if (!(max > 0) || !std::isfinite(max)) return kTotalBits - shard_bits_ - kHeadroomBits;
  int k;
  std::frexp(max, &k);  // max < 2^k
  return kTotalBits - shard_bits_ - kHeadroomBits - k;
}

void ExactGradSum::begin() {
  std::fill(acc_.begin(), acc_.end(), 0);
  std::fill(max_.begin(), max_.end(), 0.0);
}

void ExactGradSum::add(const float* g) { add_segments(g, 0, seg_.size()); }

void ExactGradSum::add_segments(const float* g, size_t first, size_t last) {
  const double bound = std::ldexp(1.0, kTotalBits - shard_bits_);
  for (size_t s = first; s < last; ++s) {
    const auto [off, n] = seg_[s];
    const double scale = std::ldexp(1.0, exp_[s]);
    const float* x = g + off;
    int64_t* a = acc_.data() + off;
    float m = 0.f;
    bool finite = true;
    for (size_t i = 0; i < n; ++i) {
      const float v = x[i];
      const float av = std::fabs(v);
      m = av > m ? av : m;
      finite &= av <= std::numeric_limits<float>::max();
      double q = std::nearbyint((double)v * scale);
      q = q > bound ? bound : q < -bound ? -bound : q;
      a[i] += (int64_t)(q == q ? q : 0.0);
    }
    max_[s] = std::max(max_[s], finite ? (double)m : std::numeric_limits<double>::infinity());
  }
}

bool ExactGradSum::accept(const std::vector<double>& global_max) {
  bool ok = true;
  std::vector<int> fitted = exp_;
  for (size_t s = 0; s < seg_.size(); ++s) {
    const double m = global_max[s];
    if (!std::isfinite(m) || m == 0) continue;
    int k;
    std::frexp(m, &k);  // m < 2^k, so the scaled max is below 2^(k + e)
    const int top = k + exp_[s];
    const bool overflow = top > kTotalBits - shard_bits_;
    const bool coarse = top < kMinBits;
    if (overflow || coarse) {
      ok = false;
      fitted[s] = fitted_exponent(m);
    }
  }
  if (!ok) exp_ = fitted;
  return ok;
}

void ExactGradSum::finish(float* g, const std::vector<double>& global_max) {
  for (size_t s = 0; s < seg_.size(); ++s) {
    const auto [off, n] = seg_[s];
    if (!std::isfinite(global_max[s])) {
      for (size_t i = 0; i < n; ++i) g[off + i] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const double inv = std::ldexp(1.0, -exp_[s]);
    const int64_t* a = acc_.data() + off;
    for (size_t i = 0; i < n; ++i) g[off + i] = (float)((double)a[i] * inv);
    if (global_max[s] > 0) exp_[s] = fitted_exponent(global_max[s]);
  }
}

}  // namespace tandem
