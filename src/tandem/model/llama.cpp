// Forward and backward of the decoder, as a sequence of backend kernel calls.
#include "tandem/model/llama.h"

#include <vector>

#include "tandem/core/carve.h"
#include "tandem/core/error.h"
#include "tandem/model/block.h"

namespace tandem {

struct Llama::Acts {
  struct Layer {
    float *x, *ln1, *rstd1, *qkv, *att, *lse, *h, *ln2, *rstd2, *gateup, *act;
  };
  std::vector<Layer> layers;
  float *xf, *lnf, *rstdf, *losses, *entropies, *weights;
  // backward scratch, reused by every layer
  float *dres, *dtmp, *dln, *dqkv, *datt, *dgateup, *dact;
};

Llama::Llama(const ModelConfig& cfg, Backend& be) : cfg_(cfg), be_(be), layout_(cfg) {
  cfg_.validate();
  params_ = static_cast<float*>(be_.alloc(layout_.total * sizeof(float)));
}

Llama::~Llama() {
  be_.release(params_);
  if (grads_) be_.release(grads_);
  if (acts_) be_.release(acts_);
  if (tokens_dev_) be_.release(tokens_dev_);
  if (targets_dev_) be_.release(targets_dev_);
  if (doc_start_dev_) be_.release(doc_start_dev_);
  delete a_;
}

void Llama::init(uint64_t seed) {
  std::vector<float> host(layout_.total);
  init_params(host.data(), layout_, cfg_, seed);
  load_params(host.data());
}

void Llama::load_params(const float* host) {
  be_.to_device(params_, host, layout_.total * sizeof(float));
}

void Llama::save_params(float* host) { be_.to_host(host, params_, layout_.total * sizeof(float)); }

void Llama::zero_grads() {
  if (!grads_) grads_ = static_cast<float*>(be_.alloc(layout_.total * sizeof(float)));
  be_.zero(grads_, layout_.total * sizeof(float));
}

AttnShape Llama::attn_shape() const {
  AttnShape s;
  s.B = B_;
  s.T = T_;
  s.H = cfg_.n_heads;
  s.Hkv = cfg_.n_kv_heads;
  s.D = cfg_.head_dim();
  if (packed_) s.doc_start = doc_start_dev_;
  return s;
}

void Llama::reserve(int B, int T) {
  TANDEM_CHECK(B > 0 && T > 0);
  if (T > cfg_.context)
    fail("[model] sequence length " + std::to_string(T) + " exceeds the model context " +
         std::to_string(cfg_.context));
  B_ = B;
  T_ = T;
  if (B * T <= cap_tokens_) return;
  if (acts_) be_.release(acts_);
  if (tokens_dev_) be_.release(tokens_dev_);
  if (targets_dev_) be_.release(targets_dev_);
  if (doc_start_dev_) be_.release(doc_start_dev_);
  delete a_;
  a_ = new Acts;
  const size_t N = (size_t)B * T, C = cfg_.dim, S = cfg_.qkv_dim(), F = cfg_.hidden_dim;
  const size_t HD = (size_t)cfg_.n_heads * cfg_.head_dim(), V = cfg_.vocab_size;
  const size_t lse = (size_t)B * cfg_.n_heads * T;
  auto carve = [&](Carver& c) {
    a_->layers.clear();
    for (int l = 0; l < cfg_.n_layers; ++l) {
      Acts::Layer L;
      L.x = c.take(N * C);
      L.ln1 = c.take(N * C);
      L.rstd1 = c.take(N);
      L.qkv = c.take(N * S);
      L.att = c.take(N * HD);
      L.lse = c.take(lse);
      L.h = c.take(N * C);
      L.ln2 = c.take(N * C);
      L.rstd2 = c.take(N);
      L.gateup = c.take(N * 2 * F);
      L.act = c.take(N * F);
      a_->layers.push_back(L);
    }
    a_->xf = c.take(N * C);
    a_->lnf = c.take(N * C);
    a_->rstdf = c.take(N);
    a_->losses = c.take(N);
    a_->entropies = c.take(N);
    a_->weights = c.take(N);
    logits_ = c.take(N * V);
    a_->dres = c.take(N * C);
    a_->dtmp = c.take(N * C);
    a_->dln = c.take(N * C);
    a_->dqkv = c.take(N * S);
    a_->datt = c.take(N * HD);
    a_->dgateup = c.take(N * 2 * F);
    a_->dact = c.take(N * F);
  };
  Carver measure;
  carve(measure);
  acts_ = static_cast<float*>(be_.alloc(measure.used() * sizeof(float)));
  Carver cut(acts_);
  carve(cut);
  tokens_dev_ = static_cast<int32_t*>(be_.alloc(N * sizeof(int32_t)));
  targets_dev_ = static_cast<int32_t*>(be_.alloc(N * sizeof(int32_t)));
  doc_start_dev_ = static_cast<int32_t*>(be_.alloc(N * sizeof(int32_t)));
  losses_host_.resize(N);
  cap_tokens_ = (int)N;
}

void Llama::forward(const int32_t* tokens, int B, int T, const int32_t* doc_start) {
  reserve(B, T);
  const int N = B * T, C = cfg_.dim, V = cfg_.vocab_size;
  packed_ = doc_start != nullptr;
  if (packed_) be_.to_device(doc_start_dev_, doc_start, N * sizeof(int32_t));
  const AttnShape s = attn_shape();
  be_.to_device(tokens_dev_, tokens, N * sizeof(int32_t));
  be_.embedding_forward(a_->layers[0].x, tokens_dev_, p(layout_.embed), N, C);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    Acts::Layer& L = a_->layers[l];
    float* next = l + 1 < cfg_.n_layers ? a_->layers[l + 1].x : a_->xf;
    BlockBuffers bb{L.x, L.ln1, L.rstd1, L.qkv, L.att, L.h, L.ln2, L.rstd2, L.gateup, L.act, next};
    block_forward(be_, cfg_, params_, layout_.layers[l], bb, N, [&](float* att, float* qkv) {
      be_.rope(qkv, s, 0, cfg_.rope_theta, false);
      be_.attention_forward(att, L.lse, qkv, s);
    });
  }
  be_.rmsnorm_forward(a_->lnf, a_->rstdf, a_->xf, p(layout_.final_norm), N, C, cfg_.norm_eps);
  be_.matmul_forward(logits_, a_->lnf, p(layout_.lm_head), N, V, C);
}

double Llama::loss(const int32_t* targets, float dscale, bool grad) {
  const int N = B_ * T_;
  be_.to_device(targets_dev_, targets, N * sizeof(int32_t));
  be_.cross_entropy(a_->losses, grad ? logits_ : nullptr, logits_, targets_dev_, N, cfg_.vocab_size,
                    dscale);
  be_.to_host(losses_host_.data(), a_->losses, N * sizeof(float));
  double sum = 0.0;
  for (int i = 0; i < N; ++i) sum += losses_host_[i];
  return sum;
}

void Llama::token_logprobs(const int32_t* targets, float* neg_logp, float* entropies,
                           float logit_scale) {
  const int N = B_ * T_, V = cfg_.vocab_size;
  if (logit_scale != 1.f) be_.scale(logits_, (size_t)N * V, logit_scale);
  be_.to_device(targets_dev_, targets, N * sizeof(int32_t));
  be_.cross_entropy_rows(a_->losses, entropies ? a_->entropies : nullptr, nullptr, logits_,
                         targets_dev_, nullptr, N, V);
  be_.to_host(neg_logp, a_->losses, N * sizeof(float));
  if (entropies) be_.to_host(entropies, a_->entropies, N * sizeof(float));
}

void Llama::weighted_loss_grad(const float* weights) {
  const int N = B_ * T_;
  be_.to_device(a_->weights, weights, N * sizeof(float));
  be_.cross_entropy_rows(a_->losses, nullptr, logits_, logits_, targets_dev_, a_->weights, N,
                         cfg_.vocab_size);
}

void Llama::backward(const std::function<void(int)>& ready) {
  if (!grads_) zero_grads();
  const int N = B_ * T_, C = cfg_.dim, S = cfg_.qkv_dim(), F = cfg_.hidden_dim;
  const int HD = cfg_.n_heads * cfg_.head_dim(), V = cfg_.vocab_size;
  const AttnShape s = attn_shape();
  Acts& a = *a_;
  // logits now hold dlogits (see loss()).
  be_.matmul_backward(a.dln, g(layout_.lm_head), logits_, a.lnf, p(layout_.lm_head), N, V, C);
  be_.rmsnorm_backward(a.dres, g(layout_.final_norm), a.dln, a.xf, p(layout_.final_norm), a.rstdf,
                       N, C);
  if (ready) ready(cfg_.n_layers);
  for (int l = cfg_.n_layers - 1; l >= 0; --l) {
    const LayerOffsets& o = layout_.layers[l];
    Acts::Layer& L = a.layers[l];
    // x_{l+1} = h + down(swiglu(gateup(norm(h))))
    be_.matmul_backward(a.dact, g(o.wdown), a.dres, L.act, p(o.wdown), N, C, F);
    be_.swiglu_backward(a.dgateup, a.dact, L.gateup, N, F);
    be_.matmul_backward(a.dln, g(o.wgateup), a.dgateup, L.ln2, p(o.wgateup), N, 2 * F, C);
    be_.rmsnorm_backward(a.dtmp, g(o.ln2), a.dln, L.h, p(o.ln2), L.rstd2, N, C);
    be_.add(a.dres, a.dres, a.dtmp, (size_t)N * C);
    // h = x_l + o_proj(attention(rope(qkv(norm(x_l)))))
    be_.matmul_backward(a.datt, g(o.wo), a.dres, L.att, p(o.wo), N, C, HD);
    be_.attention_backward(a.dqkv, a.datt, L.qkv, L.att, L.lse, s);
    be_.rope(a.dqkv, s, 0, cfg_.rope_theta, true);
    be_.matmul_backward(a.dln, g(o.wqkv), a.dqkv, L.ln1, p(o.wqkv), N, S, C);
    be_.rmsnorm_backward(a.dtmp, g(o.ln1), a.dln, L.x, p(o.ln1), L.rstd1, N, C);
    be_.add(a.dres, a.dres, a.dtmp, (size_t)N * C);
    if (ready) ready(l);
  }
  be_.embedding_backward(g(layout_.embed), a.dres, tokens_dev_, N, C);
  if (ready) ready(-1);
}

}  // namespace tandem
