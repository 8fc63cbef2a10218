// quantize_matrix: per block of 32, Q8 uses d = max|w| / 127 and q = round(w / d); Q4 uses the
// value of largest magnitude m, d = m / -8 and q = clamp(floor(w / d + 8.5), 0, 15) - 8, so the
// extreme value is represented exactly (the q4_0 rule).
#include "tandem/infer/quant.h"

#include <algorithm>
#include <cmath>

#include "tandem/core/error.h"
#include "tandem/core/half.h"

namespace tandem {

QuantMatrix quantize_matrix(const float* w, int N, int K, WType type) {
  QuantMatrix q;
  q.type = type;
  q.N = N;
  q.K = K;
  if (type == WType::F32) fail("[quant] quantize_matrix needs Q8 or Q4");
  if (K % kQBlock != 0)
    fail("[quant] a row of " + std::to_string(K) + " values is not a whole number of " +
         std::to_string(kQBlock) + "-value blocks; int8/q4 need dimensions divisible by " +
         std::to_string(kQBlock));
  const int nb = K / kQBlock;
  q.scale.resize((size_t)N * nb);
  q.data.resize(type == WType::Q8 ? (size_t)N * K : (size_t)N * K / 2);
  for (int n = 0; n < N; ++n)
    for (int b = 0; b < nb; ++b) {
      const float* x = w + (size_t)n * K + (size_t)b * kQBlock;
      float amax = 0.f, mx = 0.f;
      for (int j = 0; j < kQBlock; ++j)
        if (std::fabs(x[j]) > amax) {
          amax = std::fabs(x[j]);
          mx = x[j];
        }
      const size_t sb = (size_t)n * nb + b;
      if (type == WType::Q8) {
        const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
        q.scale[sb] = half_to_float(float_to_half(d));
        int8_t* out = reinterpret_cast<int8_t*>(q.data.data()) + (size_t)n * K + b * kQBlock;
        for (int j = 0; j < kQBlock; ++j) out[j] = (int8_t)std::lround(x[j] * id);
      } else {
        const float d = mx / -8.f, id = d != 0.f ? 1.f / d : 0.f;
        q.scale[sb] = half_to_float(float_to_half(d));
        uint8_t* out = q.data.data() + (size_t)n * (K / 2) + b * (kQBlock / 2);
        for (int j = 0; j < kQBlock / 2; ++j) {
          const int lo = std::min(15, (int)(int8_t)(x[j] * id + 8.5f));
          const int hi = std::min(15, (int)(int8_t)(x[j + kQBlock / 2] * id + 8.5f));
          out[j] = (uint8_t)(lo | (hi << 4));
        }
      }
    }
  return q;
}

std::vector<float> dequantize_matrix(const QuantMatrix& q) {
  std::vector<float> w((size_t)q.N * q.K);
  const int nb = q.K / kQBlock;
  for (int n = 0; n < q.N; ++n)
    for (int b = 0; b < nb; ++b) {
      const float d = q.scale[(size_t)n * nb + b];
      float* out = w.data() + (size_t)n * q.K + b * kQBlock;
      for (int j = 0; j < kQBlock; ++j) {
        int v;
        if (q.type == WType::Q8) {
          v = reinterpret_cast<const int8_t*>(q.data.data())[(size_t)n * q.K + b * kQBlock + j];
        } else {
          const uint8_t byte = q.data[(size_t)n * (q.K / 2) + b * (kQBlock / 2) + (j & 15)];
          v = (j < 16 ? (byte & 0x0F) : (byte >> 4)) - 8;
        }
        out[j] = d * (float)v;
      }
    }
  return w;
}

PackedQuant pack_quant(const QuantMatrix& q) {
  const int nb = q.K / kQBlock, panels = (q.N + kQPanel - 1) / kQPanel;
  const size_t pbytes = q.type == WType::Q8 ? (size_t)q.K * kQPanel : (size_t)q.K * kQPanel / 2;
  PackedQuant p;
  p.scale.assign((size_t)panels * nb * kQPanel, 0.f);
  p.data.assign(panels * pbytes, q.type == WType::Q8 ? 128 : 0x88);
  for (int n = 0; n < q.N; ++n) {
    const int pn = n / kQPanel, r = n % kQPanel;
    uint8_t* panel = p.data.data() + pn * pbytes;
    for (int b = 0; b < nb; ++b) {
      p.scale[((size_t)pn * nb + b) * kQPanel + r] = q.scale[(size_t)n * nb + b];
      for (int j = 0; j < kQBlock; ++j) {
        const int k = b * kQBlock + j;
        if (q.type == WType::Q8) {
          const int8_t v = static_cast<int8_t>(q.data[(size_t)n * q.K + k]);
          panel[(size_t)(k / 4) * 64 + r * 4 + k % 4] = (uint8_t)(v + 128);
        } else {
          const uint8_t byte = q.data[(size_t)n * (q.K / 2) + b * (kQBlock / 2) + (j & 15)];
          const uint8_t u = j < 16 ? (byte & 0x0F) : (byte >> 4);  // q + 8
          const int g = j / 4, c = g / 2;  // group of 4 within the block, its chunk
          uint8_t& dst = panel[(size_t)b * 256 + c * 64 + r * 4 + j % 4];
          dst = g % 2 == 0 ? (uint8_t)((dst & 0xF0) | u) : (uint8_t)((dst & 0x0F) | (u << 4));
        }
      }
    }
  }
  return p;
}

std::vector<float> pack_f32(const float* w, int N, int K) {
  const int panels = (N + kF32Panel - 1) / kF32Panel;
  std::vector<float> out((size_t)panels * K * kF32Panel, 0.f);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k)
      out[((size_t)(n / kF32Panel) * K + k) * kF32Panel + n % kF32Panel] = w[(size_t)n * K + k];
  return out;
}

WType parse_quant(const std::string& name) {
  if (name == "none" || name == "f32") return WType::F32;
  if (name == "int8" || name == "q8" || name == "q8_0") return WType::Q8;
  if (name == "q4" || name == "q4_0") return WType::Q4;
  fail("[quant] unknown quantization '" + name + "' (expected none, int8 or q4)");
}

const char* quant_name(WType t) {
  switch (t) {
    case WType::F32: return "none";
    case WType::Q8: return "int8";
    case WType::Q4: return "q4";
  }
  return "?";
}

}  // namespace tandem
