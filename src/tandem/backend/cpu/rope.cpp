// rope family: rotate-half rotary embedding (Hugging Face Llama layout) on the q and k parts
// of fused qkv rows, in place. The inverse rotation is the backward.
#include <cmath>
#include <vector>

#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {

void CpuBackend::rope(float* qkv, const AttnShape& s, int pos0, float theta, bool inverse) {
  const int half = s.D / 2, stride = s.qkv_stride(), heads = s.H + s.Hkv;
  const int N = s.B * s.T;
#pragma omp parallel num_threads(threads_)
  {
    // cos/sin for one position, computed in double so every backend can match it exactly.
    static thread_local std::vector<float> cs;
    if ((int)cs.size() < 2 * half) cs.resize(2 * half);
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      int pos = pos0 + n % s.T;
      for (int i = 0; i < half; ++i) {
        double inv_freq = std::pow((double)theta, -2.0 * i / s.D);
        double a = pos * inv_freq;
        cs[i] = (float)std::cos(a);
        cs[half + i] = inverse ? -(float)std::sin(a) : (float)std::sin(a);
      }
      float* row = qkv + (size_t)n * stride;
      for (int h = 0; h < heads; ++h) {  // q heads then k heads, contiguous
        float* x = row + h * s.D;
        for (int i = 0; i < half; ++i) {
          float c = cs[i], sn = cs[half + i];
          float x1 = x[i], x2 = x[i + half];
          x[i] = x1 * c - x2 * sn;
          x[i + half] = x2 * c + x1 * sn;
        }
      }
    }
  }
}

}  // namespace tandem
