// One decoder block's forward, shared by training (full causal attention over the batch) and
// inference (attention over a KV cache): only the attention step differs, so it is passed in.
#pragma once

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

// The parts before and after attention.
void block_forward_pre(Backend& be, const ModelConfig& cfg, const float* params,
                       const LayerOffsets& o, const BlockBuffers& b, int n);
void block_forward_post(Backend& be, const ModelConfig& cfg, const float* params,
                        const LayerOffsets& o, const BlockBuffers& b, int n);

// `attention(att, qkv)` rotates q/k in qkv and writes the attention output to att. A template
// rather than std::function: nothing is allocated per call.
template <typename Attention>
void block_forward(Backend& be, const ModelConfig& cfg, const float* params, const LayerOffsets& o,
                   const BlockBuffers& b, int n, Attention&& attention) {
  block_forward_pre(be, cfg, params, o, b, n);
  attention(b.att, b.qkv);
  block_forward_post(be, cfg, params, o, b, n);
}

}  // namespace tandem
