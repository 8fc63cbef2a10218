// Shared helpers for the kernel tests: device buffers that go through the Backend interface,
// reproducible random inputs, relative errors and central finite differences in double.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "tandem/backend/backend.h"

namespace tandem::test {

// One backend for the whole binary. TANDEM_TEST_BACKEND picks another one (default "cpu"),
// so the same suite checks a port.
inline Backend& backend() {
  static std::unique_ptr<Backend> b = [] {
    const char* env = std::getenv("TANDEM_TEST_BACKEND");
    const std::string name = env && *env ? env : "cpu";
    try {
      return make_backend(name, 2);
    } catch (const std::exception& e) {
      // A GPU backend on a machine without its device: skipped (ctest's SKIP_RETURN_CODE).
      if (name != "cpu" && std::string(e.what()).find("no device") != std::string::npos) {
        std::fprintf(stderr, "SKIPPED: backend %s: %s\n", name.c_str(), e.what());
        std::exit(77);
      }
      throw;
    }
  }();
  return *b;
}

// A buffer of n elements in backend memory, released on destruction. Everything the tests
// read or write moves through to_device / to_host.
template <class T>
class DeviceBuf {
 public:
  explicit DeviceBuf(size_t n)
      : n_(n), p_(static_cast<T*>(backend().alloc(std::max<size_t>(n, 1) * sizeof(T)))) {}
  explicit DeviceBuf(const std::vector<T>& host) : DeviceBuf(host.size()) { upload(host); }
  ~DeviceBuf() { backend().release(p_); }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;

  T* get() { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    EXPECT_EQ(host.size(), n_);
    if (n_ > 0) backend().to_device(p_, host.data(), n_ * sizeof(T));
  }
  void fill(T value) { upload(std::vector<T>(n_, value)); }
  std::vector<T> download() {
    std::vector<T> host(n_);
    backend().synchronize();
    if (n_ > 0) backend().to_host(host.data(), p_, n_ * sizeof(T));
    return host;
  }

 private:
  size_t n_;
  T* p_;
};

// Uniform floats in [lo, hi), reproducible across standard libraries (no std distributions).
inline std::vector<float> uniform(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 gen(seed);
  std::vector<float> out(n);
  for (auto& x : out) {
    double u = static_cast<double>(gen() >> 11) * 0x1.0p-53;
    x = static_cast<float>(lo + (hi - lo) * u);
  }
  return out;
}

inline std::vector<int32_t> uniform_ints(size_t n, uint64_t seed, int32_t lo, int32_t hi) {
  std::mt19937_64 gen(seed);
  std::vector<int32_t> out(n);
  for (auto& x : out) x = lo + static_cast<int32_t>(gen() % static_cast<uint64_t>(hi - lo));
  return out;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// ||got - want|| / ||want|| (absolute norm of the difference when want is zero).
inline double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += want[i] * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Passes when rel_err(got, want) <= tol; on failure names the worst element.
inline ::testing::AssertionResult close(const std::vector<float>& got,
                                        const std::vector<double>& want, double tol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != expected " << want.size();
  double e = rel_err(got, want);
  if (e <= tol) return ::testing::AssertionSuccess();
  size_t worst = 0;
  double worst_d = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    double d = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!(d <= worst_d)) {  // NaN counts as worst
      worst_d = d;
      worst = i;
      if (std::isnan(d)) break;
    }
  }
  return ::testing::AssertionFailure()
         << "relative error " << e << " > " << tol << " (n=" << want.size() << "); worst at ["
         << worst << "]: got " << got[worst] << ", expected " << want[worst];
}

// Same as close() on a subset of indices.
inline ::testing::AssertionResult close_at(const std::vector<float>& got,
                                           const std::vector<double>& want,
                                           const std::vector<size_t>& idx, double tol) {
  std::vector<float> g;
  std::vector<double> w;
  for (size_t i : idx) {
    g.push_back(got[i]);
    w.push_back(want[i]);
  }
  return close(g, w, tol);
}

template <class T>
::testing::AssertionResult bits_equal(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
  if (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0)
    return ::testing::AssertionSuccess();
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure()
             << "first differing element [" << i << "]: " << a[i] << " vs " << b[i];
  return ::testing::AssertionFailure();
}

inline std::vector<size_t> all_indices(size_t n) {
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  return idx;
}

// A reproducible random subset of [0, n) with at most k elements (all of them when n <= k).
inline std::vector<size_t> sample_indices(size_t n, size_t k, uint64_t seed) {
  std::vector<size_t> idx = all_indices(n);
  if (n <= k) return idx;
  std::mt19937_64 gen(seed);
  for (size_t i = 0; i < k; ++i) std::swap(idx[i], idx[i + gen() % (n - i)]);
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Central differences of a scalar function f at x for the listed indices; entries not listed
// are left at zero. The function is evaluated in double, so a small step is accurate.
inline std::vector<double> fd_grad(const std::function<double(const std::vector<double>&)>& f,
                                   std::vector<double> x, const std::vector<size_t>& idx,
                                   double h = 1e-4) {
  std::vector<double> g(x.size(), 0.0);
  for (size_t i : idx) {
    double x0 = x[i];
    x[i] = x0 + h;
    double fp = f(x);
    x[i] = x0 - h;
    double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// sum(out * r): the scalar loss whose gradient with respect to out is r.
inline double dot(const std::vector<double>& out, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += out[i] * static_cast<double>(r[i]);
  return s;
}

// got - prefill, element by element in double: what a kernel that ADDs contributed.
inline std::vector<float> minus(const std::vector<float>& got, float prefill) {
  std::vector<float> out(got.size());
  for (size_t i = 0; i < got.size(); ++i)
    out[i] = static_cast<float>(static_cast<double>(got[i]) - prefill);
  return out;
}

constexpr float kGarbage = 123.0f;  // pre-fill of written activation gradients
constexpr double kFwdTol = 1e-5;    // pointwise forwards against double references
constexpr double kGemmTol = 5e-5;   // fp32 matmul / attention forwards (long dot products)
constexpr double kGradTol = 1e-4;   // backwards against finite differences

}  // namespace tandem::test
