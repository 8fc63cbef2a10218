// rope family: rotate-half rotary embedding (Hugging Face Llama layout) on the q and k parts
// of fused qkv rows, in place. The inverse rotation is the backward.
#include <algorithm>
#include <cmath>
#include <vector>

#include "tandem/backend/cpu/cpu_backend.h"
#include "tandem/core/error.h"

namespace tandem {
namespace {

// Rotates the q and k heads (contiguous) of one qkv row by the angles whose cos/sin are given.
inline void rotate_row(float* row, int heads, int D, const float* cs, const float* sn) {
  const int half = D / 2;
  for (int h = 0; h < heads; ++h) {
    float* x = row + h * D;
#pragma omp simd
    for (int i = 0; i < half; ++i) {
      float x1 = x[i], x2 = x[i + half];
      x[i] = x1 * cs[i] - x2 * sn[i];
      x[i + half] = x2 * cs[i] + x1 * sn[i];
    }
  }
}

}  // namespace

void CpuBackend::rope(float* qkv, const AttnShape& s, int pos0, float theta, bool inverse) {
  const int half = s.D / 2, stride = s.qkv_stride(), heads = s.H + s.Hkv;
  const int N = s.B * s.T;
  // cos/sin per (position, frequency), computed once per call in double so every backend can
  // reproduce them; rows of the batch share the table.
  rope_table_.resize((size_t)s.T * 2 * half);
  float* tab = rope_table_.data();
#pragma omp parallel num_threads(threads_)
  {
#pragma omp for schedule(static)
    for (int t = 0; t < s.T; ++t) {
      for (int i = 0; i < half; ++i) {
        double a = (double)(pos0 + t) * std::pow((double)theta, -2.0 * i / s.D);
        tab[(size_t)t * 2 * half + i] = (float)std::cos(a);
        tab[(size_t)t * 2 * half + half + i] = inverse ? -(float)std::sin(a) : (float)std::sin(a);
      }
    }
#pragma omp for schedule(static)
    for (int n = 0; n < N; ++n) {
      // A packed row's positions restart at each document (the table's index is pos - pos0).
      const int t = n % s.T - (s.doc_start ? s.doc_start[n] : 0);
      const float* cs = tab + (size_t)t * 2 * half;
      rotate_row(qkv + (size_t)n * stride, heads, s.D, cs, cs + half);
    }
  }
}

void CpuBackend::rope_batch(float* qkv, const AttnShape& s, const KvBatch& b, float theta) {
  const int half = s.D / 2, stride = s.qkv_stride(), heads = s.H + s.Hkv;
  int rows = 0;
  for (int i = 0; i < b.count; ++i) rows = std::max(rows, b.row0[i] + b.n[i]);
  // Row -> position; the angles are rope()'s (double, cast to float), kept in a table by
  // position so a decoding step computes none.
  std::vector<int32_t> pos(rows, 0);
  int npos = 0;
  for (int i = 0; i < b.count; ++i) {
    for (int t = 0; t < b.n[i]; ++t) pos[b.row0[i] + t] = b.pos0[i] + t;
    npos = std::max(npos, b.pos0[i] + b.n[i]);
  }
  if (rope_cache_theta_ != theta || rope_cache_d_ != s.D) {
    rope_cache_.clear();
    rope_cache_theta_ = theta;
    rope_cache_d_ = s.D;
  }
  const size_t have = rope_cache_.size() / (2 * half);
  if (have < (size_t)npos) {
    rope_cache_.resize((size_t)npos * 2 * half);
    for (size_t p = have; p < (size_t)npos; ++p)
      for (int i = 0; i < half; ++i) {
        double a = (double)p * std::pow((double)theta, -2.0 * i / s.D);
        rope_cache_[p * 2 * half + i] = (float)std::cos(a);
        rope_cache_[p * 2 * half + half + i] = (float)std::sin(a);
      }
  }
  const float* tab = rope_cache_.data();
  const bool parallel = (size_t)rows * heads * s.D >= 16384;
#pragma omp parallel for num_threads(threads_) schedule(static) if (parallel)
  for (int r = 0; r < rows; ++r) {
    const float* cs = tab + (size_t)pos[r] * 2 * half;
    rotate_row(qkv + (size_t)r * stride, heads, s.D, cs, cs + half);
  }
}

}  // namespace tandem
