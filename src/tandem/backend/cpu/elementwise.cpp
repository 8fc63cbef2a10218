// Elementwise kernels and reductions: add, scale, sum of squares, finite check.
#include <algorithm>
#include <cmath>
#include <vector>

#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {
namespace {
// Reductions run over fixed chunks so the sum order depends neither on threads nor schedule.
constexpr size_t kChunk = 1 << 14;
}  // namespace

void CpuBackend::add(float* out, const float* a, const float* b, size_t n) {
  // Short vectors (a decoding step) cost less than waking the other threads.
#pragma omp parallel for num_threads(threads_) schedule(static) if (n >= 65536)
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void CpuBackend::scale(float* x, size_t n, float s) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (size_t i = 0; i < n; ++i) x[i] *= s;
}

double CpuBackend::sum_squares(const float* x, size_t n) {
  size_t chunks = (n + kChunk - 1) / kChunk;
  static thread_local std::vector<double> parts;
  if (parts.size() < chunks) parts.resize(chunks);
  double* pp = parts.data();
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (size_t c = 0; c < chunks; ++c) {
    size_t end = std::min(n, (c + 1) * kChunk);
    // Eight independent lanes (vectorizable without reassociation), combined in lane order.
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = c * kChunk;
    for (; i + 8 <= end; i += 8)
      for (int k = 0; k < 8; ++k) lane[k] += (double)x[i + k] * x[i + k];
    double part = 0.0;
    for (int k = 0; k < 8; ++k) part += lane[k];
    for (; i < end; ++i) part += (double)x[i] * x[i];
    pp[c] = part;
  }
  double total = 0.0;
  for (size_t c = 0; c < chunks; ++c) total += pp[c];
  return total;
}

bool CpuBackend::all_finite(const float* x, size_t n) {
  int bad = 0;
#pragma omp parallel for num_threads(threads_) schedule(static) reduction(| : bad)
  for (size_t i = 0; i < n; ++i) bad |= !std::isfinite(x[i]);
  return bad == 0;
}

}  // namespace tandem
