// Counter-based random numbers: every draw is a pure function of (seed, stream, counter), so
// any step's randomness can be recomputed without replaying the steps before it.
#pragma once

#include <cmath>
#include <cstdint>

namespace tandem {

inline uint64_t mix64(uint64_t z) {  // SplitMix64 finalizer
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t rng_u64(uint64_t seed, uint64_t stream, uint64_t counter) {
  return mix64(mix64(mix64(seed) ^ stream) ^ counter);
}

// Uniform in [0, 1) with 24 bits of precision.
inline float rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
  return static_cast<float>(rng_u64(seed, stream, counter) >> 40) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller on two 32-bit halves of one draw; computed in double so the
// result does not depend on the float math library's rounding.
inline float rng_normal(uint64_t seed, uint64_t stream, uint64_t counter) {
  uint64_t r = rng_u64(seed, stream, counter);
  double u1 = (static_cast<double>(r >> 32) + 1.0) * (1.0 / 4294967297.0);
  double u2 = static_cast<double>(r & 0xffffffffull) * (1.0 / 4294967296.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

// Named streams so that independent uses never share draws.
enum RngStream : uint64_t {
  kStreamInit = 1,
  kStreamData = 2,
  kStreamSample = 3,
};

}  // namespace tandem
