// Measured memory read bandwidth: T threads each stream through their share of a buffer far
// larger than the caches, summing it with the widest vector loads the build has. Batch-1
// decoding reads every weight once per token, so this is its ceiling; bench/infer.py reports
// decode GB/s against it.
//   read_bandwidth [--mib N] [--threads T] [--reps R]   prints {"read_gbps": ..., ...}
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  size_t mib = 2048;
  int threads = 2, reps = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--mib") mib = std::strtoul(argv[i + 1], nullptr, 10);
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: read_bandwidth [--mib N] [--threads T] [--reps R]\n");
      return 2;
    }
  }
  const size_t n = mib * 1024 * 1024 / sizeof(float);
  float* buf = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  if (!buf) {
    std::fprintf(stderr, "read_bandwidth: cannot allocate %zu MiB\n", mib);
    return 1;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; ++i) buf[i] = (float)(i & 1023) * 1e-3f;  // first touch per thread
  std::vector<double> rates;
  double sink = 0;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      // Eight independent sums so the adds never limit the loads.
      float acc[8][16] = {};
#pragma omp for schedule(static)
      for (size_t i = 0; i < n / 128; ++i) {
        const float* p = buf + i * 128;
        for (int k = 0; k < 8; ++k)
          for (int l = 0; l < 16; ++l) acc[k][l] += p[k * 16 + l];
      }
      for (auto& a : acc)
        for (float x : a) total += x;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink += total;
    if (r > 0) rates.push_back((double)n * sizeof(float) / s / 1e9);  // the first warms up
  }
  std::sort(rates.begin(), rates.end());
  std::printf("{\"read_gbps\": %.2f, \"best_gbps\": %.2f, \"mib\": %zu, \"threads\": %d, "
              "\"check\": %.1f}\n",
              rates[rates.size() / 2], rates.back(), mib, threads, sink > 0 ? 1.0 : 0.0);
  std::free(buf);
  return 0;
}
