// One decoder block's forward, shared by training (full causal attention over the batch) and
// inference (attention over a KV cache): only the attention step differs, so it is passed in.
#pragma once

#include <functional>

#include "tandem/backend/backend.h"
#include "tandem/model/config.h"
#include "tandem/model/params.h"

namespace tandem {

// Buffers for n tokens. `x` is the block input; `out` receives the block output (it may alias
// x only when the caller does not need x afterwards). ln1/ln2 may alias; so may rstd1/rstd2.
struct BlockBuffers {
  const float* x;  // (n, C)
  float *ln1, *rstd1, *qkv, *att, *h, *ln2, *rstd2, *gateup, *act;
  float* out;  // (n, C)
};

// Rotates q/k in qkv and writes attention output to att.
using AttentionStep = std::function<void(float* att, float* qkv)>;

void block_forward(Backend& be, const ModelConfig& cfg, const float* params,
                   const LayerOffsets& o, const BlockBuffers& b, int n,
                   const AttentionStep& attention);

}  // namespace tandem
