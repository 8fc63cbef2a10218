// embedding family: row gather forward, scatter-add backward.
#include <omp.h>

#include <cstring>

#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {

void CpuBackend::embedding_forward(float* out, const int32_t* tokens, const float* table, int N,
                                   int C) {
#pragma omp parallel for num_threads(threads_) schedule(static)
  for (int n = 0; n < N; ++n) {
    std::memcpy(out + (size_t)n * C, table + (size_t)tokens[n] * C, sizeof(float) * C);
  }
}

void CpuBackend::embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int N,
                                    int C) {
  // Threads own disjoint column ranges and walk tokens in order: no races, fixed sum order.
#pragma omp parallel num_threads(threads_)
  {
    int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    int c0 = (int)((long)C * tid / nt), c1 = (int)((long)C * (tid + 1) / nt);
    for (int n = 0; n < N; ++n) {
      float* row = dtable + (size_t)tokens[n] * C;
      const float* g = dout + (size_t)n * C;
      for (int c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

}  // namespace tandem
