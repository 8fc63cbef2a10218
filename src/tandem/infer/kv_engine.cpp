// KvEngine: the decoder forward restricted to new positions, attending over cached keys/values.
#include "tandem/infer/kv_engine.h"

#include "tandem/core/carve.h"
#include "tandem/core/error.h"
#include "tandem/model/block.h"

namespace tandem {

KvEngine::KvEngine(Llama& model, int max_seq)
    : model_(model), be_(model.backend()), max_seq_(max_seq) {
  const ModelConfig& c = model.config();
  TANDEM_CHECK(max_seq > 0 && max_seq <= c.context);
  const size_t N = max_seq, C = c.dim, S = c.qkv_dim(), F = c.hidden_dim;
  const size_t HD = (size_t)c.n_heads * c.head_dim(), KV = (size_t)c.n_kv_heads * c.head_dim();
  auto carve = [&](Carver& cv) {
    x_ = cv.take(N * C);
    ln_ = cv.take(N * C);
    h_ = cv.take(N * C);
    qkv_ = cv.take(N * S);
    att_ = cv.take(N * HD);
    gateup_ = cv.take(N * 2 * F);
    act_ = cv.take(N * F);
    logits_ = cv.take(c.vocab_size);
    rstd_ = cv.take(N);
    kcache_.clear();
    vcache_.clear();
    for (int l = 0; l < c.n_layers; ++l) {
      kcache_.push_back(cv.take(N * KV));
      vcache_.push_back(cv.take(N * KV));
    }
  };
  Carver measure;
  carve(measure);
  buf_ = static_cast<float*>(be_.alloc(measure.used() * sizeof(float)));
  Carver cut(buf_);
  carve(cut);
  tokens_dev_ = static_cast<int32_t*>(be_.alloc(N * sizeof(int32_t)));
  logits_host_.resize(c.vocab_size);
}

KvEngine::~KvEngine() {
  be_.release(buf_);
  be_.release(tokens_dev_);
}

const std::vector<float>& KvEngine::feed(const int32_t* tokens, int n) {
  const ModelConfig& c = model_.config();
  if (n <= 0 || pos_ + n > max_seq_)
    fail("[generate] sequence of " + std::to_string(pos_ + n) + " tokens exceeds the context of " +
         std::to_string(max_seq_));
  const int C = c.dim, V = c.vocab_size;
  const ParamLayout& L = model_.layout();
  const float* P = model_.params();
  AttnShape s;
  s.B = 1;
  s.T = n;
  s.H = c.n_heads;
  s.Hkv = c.n_kv_heads;
  s.D = c.head_dim();
  be_.to_device(tokens_dev_, tokens, n * sizeof(int32_t));
  be_.embedding_forward(x_, tokens_dev_, P + L.embed, n, C);
  for (int l = 0; l < c.n_layers; ++l) {
    // The block writes its output over its input: x is not needed once h holds the residual.
    BlockBuffers bb{x_, ln_, rstd_, qkv_, att_, h_, ln_, rstd_, gateup_, act_, x_};
    block_forward(be_, c, P, L.layers[l], bb, n, [&](float* att, float* qkv) {
      be_.rope(qkv, s, pos_, c.rope_theta, false);
      be_.attention_kv_forward(att, kcache_[l], vcache_[l], qkv, s, pos_, n);
    });
  }
  const float* last = x_ + (size_t)(n - 1) * C;
  be_.rmsnorm_forward(ln_, rstd_, last, P + L.final_norm, 1, C, c.norm_eps);
  be_.matmul_forward(logits_, ln_, P + L.lm_head, 1, V, C);
  be_.to_host(logits_host_.data(), logits_, V * sizeof(float));
  pos_ += n;
  return logits_host_;
}

}  // namespace tandem
