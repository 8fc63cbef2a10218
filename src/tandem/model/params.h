// The parameter buffer: every weight of the model lives in one allocation, carved into named
// tensors with Hugging Face Llama names and [out, in] layouts. q/k/v and gate/up sit next to
// each other so one GEMM computes all of them; norms sit at the end (no weight decay).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tandem/model/config.h"

namespace tandem {

struct TensorInfo {
  std::string name;            // e.g. model.layers.0.self_attn.q_proj.weight
  std::vector<int64_t> shape;  // [out, in] for linear weights
  size_t offset = 0;           // in floats from the buffer start
  size_t numel = 0;
  bool decay = true;  // weight decay applies (not to norms)
};

// Offsets (in floats) of one block's tensors inside the buffer.
struct LayerOffsets {
  size_t ln1, wqkv, wo, ln2, wgateup, wdown;
};

struct ParamLayout {
  std::vector<TensorInfo> tensors;
  std::vector<LayerOffsets> layers;
  size_t embed = 0, final_norm = 0, lm_head = 0;  // lm_head == embed when tied
  size_t total = 0;
  size_t decayed = 0;  // floats [0, decayed) take weight decay, [decayed, total) do not

  explicit ParamLayout(const ModelConfig& cfg);
  const TensorInfo* find(const std::string& name) const;
};

// Deterministic initialization from a seed: N(0, 0.02) for matmul weights (residual output
// projections scaled by 1/sqrt(2L)), ones for norms. Element i draws counter i.
void init_params(float* host, const ParamLayout& layout, const ModelConfig& cfg, uint64_t seed);

}  // namespace tandem
