// Weight quantization for inference (host side): fp32 matrices to the Q8 / Q4 block formats of
// backend.h. Block scales are rounded to half precision, so the values are exactly those of
// GGUF q8_0 / q4_0 and an exported quantized model is the same model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tandem/backend/backend.h"

namespace tandem {

struct QuantMatrix {
  WType type = WType::F32;
  int N = 0, K = 0;
  std::vector<uint8_t> data;  // Q8: N*K int8; Q4: N*K/2 nibble pairs
  std::vector<float> scale;   // N * K / kQBlock, each exactly representable in fp16
};

// Throws "[quant] ..." when K is not a multiple of the block size.
QuantMatrix quantize_matrix(const float* w, int N, int K, WType type);
// w[n][k] = scale * q, for tests and for exporting.
std::vector<float> dequantize_matrix(const QuantMatrix& q);

// A quantized matrix in the kernel layout of backend.h (rows padded to whole pairs of blocks,
// values stored unsigned): what WMatrix::data and ::scale point to.
struct PackedQuant {
  std::vector<uint8_t> data;
  std::vector<float> scale;
};
PackedQuant pack_quant(const QuantMatrix& q);

// Row-major (N, K) fp32 weights in the panel layout WType::F32 uses (backend.h).
std::vector<float> pack_f32(const float* w, int N, int K);

// "none" | "int8" | "q4" (also "f32", "q8", "q8_0", "q4_0"); throws naming the bad value.
WType parse_quant(const std::string& name);
const char* quant_name(WType t);  // "none", "int8", "q4"

}  // namespace tandem
