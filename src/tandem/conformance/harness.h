// The conformance harness: one case's inputs (the same values on every backend, from a
// counter-based RNG), its outputs between guard regions, and what came back.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tandem/backend/backend.h"
#include "tandem/core/rng.h"

namespace tandem::conformance {

class Ctx {
 public:
  // poison: the first float input gets a NaN at its middle element and an Inf after it.
  Ctx(Backend& be, uint64_t seed, bool poison) : be_(be), seed_(seed), poison_(poison) {}
  ~Ctx() {
    for (void* p : owned_) be_.release(p);
  }
  Ctx(const Ctx&) = delete;
  Ctx& operator=(const Ctx&) = delete;

  Backend& be() { return be_; }

  std::vector<float> values(size_t n, float lo, float hi) {
    std::vector<float> v(n);
    const uint64_t stream = 1000 + streams_++;
    for (size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * rng_uniform(seed_, stream, i);
    return v;
  }
  // A device copy of uniform values in [lo, hi).
  float* input(size_t n, float lo = -1.f, float hi = 1.f) { return input(values(n, lo, hi)); }
  float* input(std::vector<float> v) {
    if (poison_ && !poisoned_ && v.size() >= 2) {
      v[v.size() / 2] = std::numeric_limits<float>::quiet_NaN();
      v[v.size() / 2 + 1] = std::numeric_limits<float>::infinity();
      poisoned_ = true;
    }
    return upload(v);
  }
  int32_t* ints(const std::vector<int32_t>& v) { return upload(v); }

  // An output of n floats between guard regions, starting as `init` (empty: zeros).
  float* output(size_t n, const std::vector<float>& init = {}) {
    std::vector<float> all(n + 2 * kGuard);
    const uint32_t pattern = kSentinel;
    for (size_t i = 0; i < all.size(); ++i) std::memcpy(&all[i], &pattern, 4);
    for (size_t i = 0; i < n; ++i) all[kGuard + i] = init.empty() ? 0.f : init[i];
    float* base = upload(all);
    outs_.push_back({base, n});
    return base + kGuard;
  }
  // A result the kernel returned to the host.
  void scalar(double v) { scalars_.push_back(v); }

  // Runs the kernel call and records its time (synchronized).
  template <class F>
  void time(F&& f) {
    be_.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    be_.synchronize();
    ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }

  // Downloads every output (in order, then the host scalars) and checks the guards.
  std::vector<std::vector<double>> results(bool& guards_ok) {
    std::vector<std::vector<double>> out;
    guards_ok = true;
    for (const auto& o : outs_) {
      std::vector<float> all(o.n + 2 * kGuard);
      be_.to_host(all.data(), o.base, all.size() * sizeof(float));
      for (size_t i = 0; i < all.size(); ++i) {
        if (i >= kGuard && i < kGuard + o.n) continue;
        uint32_t bits;
        std::memcpy(&bits, &all[i], 4);
        if (bits != kSentinel) guards_ok = false;
      }
      out.emplace_back(all.begin() + kGuard, all.begin() + kGuard + o.n);
    }
    for (double s : scalars_) out.push_back({s});
    return out;
  }
  double ms() const { return ms_; }

 private:
  static constexpr size_t kGuard = 64;
  static constexpr uint32_t kSentinel = 0x7FBADBADu;  // a NaN no kernel produces
  template <class T>
  T* upload(const std::vector<T>& v) {
    void* p = be_.alloc(std::max<size_t>(1, v.size()) * sizeof(T));
    if (!v.empty()) be_.to_device(p, v.data(), v.size() * sizeof(T));
    owned_.push_back(p);
    return static_cast<T*>(p);
  }
  struct Out {
    float* base;
    size_t n;
  };
  Backend& be_;
  uint64_t seed_;
  bool poison_, poisoned_ = false;
  int streams_ = 0;
  std::vector<void*> owned_;
  std::vector<Out> outs_;
  std::vector<double> scalars_;
  double ms_ = 0;
};

}  // namespace tandem::conformance
