// block_forward: RMSNorm -> qkv -> attention -> o_proj -> residual -> RMSNorm -> SwiGLU MLP ->
// residual, as backend kernel calls.
#include "tandem/model/block.h"

namespace tandem {

void block_forward_pre(Backend& be, const ModelConfig& cfg, const float* P, const LayerOffsets& o,
                       const BlockBuffers& b, int n) {
  be.rmsnorm_forward(b.ln1, b.rstd1, b.x, P + o.ln1, n, cfg.dim, cfg.norm_eps);
  be.matmul_forward(b.qkv, b.ln1, P + o.wqkv, n, cfg.qkv_dim(), cfg.dim);
}

void block_forward_post(Backend& be, const ModelConfig& cfg, const float* P, const LayerOffsets& o,
                        const BlockBuffers& b, int n) {
  const int C = cfg.dim, F = cfg.hidden_dim;
  const int HD = cfg.n_heads * cfg.head_dim();
  const size_t nc = (size_t)n * C;
  be.matmul_forward(b.h, b.att, P + o.wo, n, C, HD);
  be.add_rmsnorm_forward(b.h, b.ln2, b.rstd2, b.h, b.x, P + o.ln2, n, C, cfg.norm_eps);
  be.matmul_forward(b.gateup, b.ln2, P + o.wgateup, n, 2 * F, C);
  be.swiglu_forward(b.act, b.gateup, n, F);
  be.matmul_forward(b.out, b.act, P + o.wdown, n, C, F);
  be.add(b.out, b.out, b.h, nc);
}

}  // namespace tandem
