// InferModel and BatchEngine: the decoder forward for new tokens of several sequences. Matmuls
// run once over all new tokens (the weights are read once per step); rotary embedding and
// attention run per sequence against its own cache.
#include "tandem/infer/engine.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "tandem/core/carve.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/infer/quant.h"
#include "tandem/ckpt/checkpoint.h"

namespace tandem {

ModelFiles load_model_files(const std::string& path) {
  if (!path_exists(path)) fail("[checkpoint] '" + path + "' does not exist");
  if (!path_exists(path + "/manifest.json") && std::filesystem::is_directory(path)) {
    std::vector<std::string> rejected;
    auto latest = latest_checkpoint(path, &rejected);
    for (const auto& r : rejected) std::fprintf(stderr, "[checkpoint] skipping: %s\n", r.c_str());
    if (!latest) fail("[checkpoint] '" + path + "' holds no checkpoint that verifies");
    return load_model_files(*latest);
  }
  nlohmann::json man = read_manifest(path);
  ModelFiles mf;
  mf.dir = path;
  mf.config = parse_run_config(man["config"].get<std::string>(), path + "/manifest.json");
  mf.step = man["step"].get<int64_t>();
  if (!man["files"].contains("tokenizer.model"))
    fail("[checkpoint] " + path + ": has no tokenizer.model");
  mf.tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(path + "/tokenizer.model"));
  if (mf.tokenizer->vocab_size() != mf.config.model.vocab_size)
    fail("[checkpoint] " + path + "/tokenizer.model has a vocabulary of " +
         std::to_string(mf.tokenizer->vocab_size()) + " but the model expects " +
         std::to_string(mf.config.model.vocab_size));
  ParamLayout layout(mf.config.model);
  mf.params = load_checkpoint(path, layout, false).params;
  return mf;
}

std::string run_name(const ModelFiles& mf) {
  std::filesystem::path p = std::filesystem::weakly_canonical(mf.dir);
  if (p.filename().string().rfind("step-", 0) == 0) p = p.parent_path();
  const std::string name = p.filename().string();
  return name.empty() ? "tandem" : name;
}

InferModel::InferModel(const ModelConfig& cfg, const float* P, Backend& be, WType type)
    : cfg_(cfg), be_(be), type_(type) {
  const ParamLayout L(cfg);
  auto put = [&](const float* host, size_t n) {
    float* d = static_cast<float*>(be_.alloc(n * sizeof(float)));
    be_.to_device(d, host, n * sizeof(float));
    owned_.push_back(d);
    return d;
  };
  const int C = cfg.dim, F = cfg.hidden_dim, HD = cfg.n_heads * cfg.head_dim();
  embed_ = put(P + L.embed, (size_t)cfg.vocab_size * C);
  final_norm_ = put(P + L.final_norm, C);
  for (const LayerOffsets& o : L.layers) {
    Layer l;
    l.ln1 = put(P + o.ln1, C);
    l.ln2 = put(P + o.ln2, C);
    l.wqkv = upload(P + o.wqkv, cfg.qkv_dim(), C);
    l.wo = upload(P + o.wo, C, HD);
    l.wgateup = upload(P + o.wgateup, 2 * F, C);
    l.wdown = upload(P + o.wdown, C, F);
    layers_.push_back(l);
  }
  lm_head_ = upload(P + L.lm_head, cfg.vocab_size, C);
}

InferModel::~InferModel() {
  for (void* p : owned_) be_.release(p);
}

WMatrix InferModel::upload(const float* host, int N, int K) {
  WMatrix w;
  w.type = type_;
  w.N = N;
  w.K = K;
  auto put = [&](const void* src, size_t bytes) {
    void* d = be_.alloc(bytes);
    be_.to_device(d, src, bytes);
    owned_.push_back(d);
    weight_bytes_ += bytes;
    return d;
  };
  if (type_ == WType::F32) {
    const std::vector<float> packed = pack_f32(host, N, K);
    w.data = put(packed.data(), packed.size() * sizeof(float));
  } else {
    const PackedQuant q = pack_quant(quantize_matrix(host, N, K, type_));
    w.data = put(q.data.data(), q.data.size());
    w.scale = static_cast<const float*>(put(q.scale.data(), q.scale.size() * sizeof(float)));
  }
  return w;
}

BatchEngine::BatchEngine(InferModel& model, const EngineOptions& opt)
    : model_(model), be_(model.backend()), opt_(opt) {
  const ModelConfig& c = model.config();
  if (opt_.max_seq <= 0) opt_.max_seq = c.context;
  if (opt_.max_step_tokens <= 0) opt_.max_step_tokens = opt_.max_seq;
  if (opt_.max_logit_rows <= 0) opt_.max_logit_rows = opt_.slots;
  TANDEM_CHECK(opt_.slots > 0 && opt_.max_seq <= c.context);
  pos_.assign(opt_.slots, 0);
  const size_t N = opt_.max_step_tokens, C = c.dim, S = c.qkv_dim(), F = c.hidden_dim;
  const size_t HD = (size_t)c.n_heads * c.head_dim(), KV = (size_t)c.n_kv_heads * c.head_dim();
  auto carve = [&](Carver& cv) {
    x_ = cv.take(N * C);
    ln_ = cv.take(N * C);
    h_ = cv.take(N * C);
    qkv_ = cv.take(N * S);
    att_ = cv.take(N * HD);
    gateup_ = cv.take(N * 2 * F);
    act_ = cv.take(N * F);
    rstd_ = cv.take(N);
    logits_ = cv.take((size_t)opt_.max_logit_rows * c.vocab_size);
    kv_ = cv.take((size_t)opt_.slots * c.n_layers * 2 * opt_.max_seq * KV);
  };
  Carver measure;
  carve(measure);
  buf_ = static_cast<float*>(be_.alloc(measure.used() * sizeof(float)));
  Carver cut(buf_);
  carve(cut);
  const int kmax = std::max({c.dim, c.hidden_dim, c.n_heads * c.head_dim()});
  scratch_ = be_.alloc(wmatmul_scratch_bytes((int)N, kmax));
  tokens_dev_ = static_cast<int32_t*>(be_.alloc(N * sizeof(int32_t)));
}

BatchEngine::~BatchEngine() {
  be_.release(buf_);
  be_.release(scratch_);
  be_.release(tokens_dev_);
}

const float* BatchEngine::step(std::span<const Item> items) {
  const ModelConfig& c = model_.config();
  const int C = c.dim, V = c.vocab_size;
  const size_t KV = (size_t)c.n_kv_heads * c.head_dim();
  // Validate everything before touching any state.
  int M = 0, R = 0;
  std::vector<char> seen(opt_.slots, 0);
  for (const Item& it : items) {
    TANDEM_CHECK(it.slot >= 0 && it.slot < opt_.slots && it.tokens && !seen[it.slot]);
    seen[it.slot] = 1;
    if (it.n <= 0) fail("[engine] an item has no tokens");
    if (pos_[it.slot] + it.n > opt_.max_seq)
      fail("[engine] sequence of " + std::to_string(pos_[it.slot] + it.n) +
           " tokens exceeds the context of " + std::to_string(opt_.max_seq));
    M += it.n;
    R += it.all_logits ? it.n : 1;
  }
  if (M == 0) return nullptr;
  if (M > opt_.max_step_tokens)
    fail("[engine] " + std::to_string(M) + " tokens in one step exceed the limit of " +
         std::to_string(opt_.max_step_tokens));
  if (R > opt_.max_logit_rows)
    fail("[engine] " + std::to_string(R) + " logit rows in one step exceed the limit of " +
         std::to_string(opt_.max_logit_rows));
  tokens_host_.clear();
  for (const Item& it : items) tokens_host_.insert(tokens_host_.end(), it.tokens, it.tokens + it.n);
  for (int32_t t : tokens_host_)
    if (t < 0 || t >= V)
      fail("[engine] token id " + std::to_string(t) + " is outside the vocabulary of " +
           std::to_string(V));
  be_.to_device(tokens_dev_, tokens_host_.data(), M * sizeof(int32_t));
  be_.embedding_forward(x_, tokens_dev_, model_.embed(), M, C);
  AttnShape s;
  s.B = 1;
  s.H = c.n_heads;
  s.Hkv = c.n_kv_heads;
  s.D = c.head_dim();
  const size_t slot_stride = (size_t)c.n_layers * 2 * opt_.max_seq * KV;
  // Per-sequence metadata for the batched rotary embedding and attention.
  std::vector<int32_t> slot(items.size()), pos0(items.size()), n_new(items.size()),
      row0(items.size());
  for (size_t i = 0, off = 0; i < items.size(); off += items[i].n, ++i) {
    slot[i] = items[i].slot;
    pos0[i] = pos_[items[i].slot];
    n_new[i] = items[i].n;
    row0[i] = (int32_t)off;
  }
  KvBatch kb{slot.data(), pos0.data(), n_new.data(), row0.data(), (int)items.size(), slot_stride};
  for (int l = 0; l < c.n_layers; ++l) {
    const InferModel::Layer& L = model_.layers()[l];
    be_.rmsnorm_forward(ln_, rstd_, x_, L.ln1, M, C, c.norm_eps);
    be_.wmatmul_forward(qkv_, ln_, L.wqkv, M, scratch_);
    float* kc = kv_ + (size_t)l * 2 * opt_.max_seq * KV;
    be_.rope_batch(qkv_, s, kb, c.rope_theta);
    be_.attention_kv_batch(att_, kc, kc + (size_t)opt_.max_seq * KV, qkv_, s, kb);
    be_.wmatmul_forward(h_, att_, L.wo, M, scratch_);
    be_.add(h_, h_, x_, (size_t)M * C);
    be_.rmsnorm_forward(ln_, rstd_, h_, L.ln2, M, C, c.norm_eps);
    be_.wmatmul_forward(gateup_, ln_, L.wgateup, M, scratch_);
    be_.swiglu_forward(act_, gateup_, M, c.hidden_dim);
    be_.wmatmul_forward(x_, act_, L.wdown, M, scratch_);
    be_.add(x_, x_, h_, (size_t)M * C);
  }
  // Final norm of the rows that need logits, packed into ln_: in one call when that is every
  // row (decoding steps), else per item.
  int off = 0, row = 0;
  if (R == M) {
    be_.rmsnorm_forward(ln_, rstd_, x_, model_.final_norm(), M, C, c.norm_eps);
    off = row = M;
  }
  for (const Item& it : items) {
    if (R == M) break;
    const int first = it.all_logits ? off : off + it.n - 1, cnt = it.all_logits ? it.n : 1;
    be_.rmsnorm_forward(ln_ + (size_t)row * C, rstd_, x_ + (size_t)first * C, model_.final_norm(),
                        cnt, C, c.norm_eps);
    row += cnt;
    off += it.n;
  }
  be_.wmatmul_forward(logits_, ln_, model_.lm_head(), R, scratch_);
  logits_host_.resize((size_t)R * V);
  be_.to_host(logits_host_.data(), logits_, logits_host_.size() * sizeof(float));
  for (const Item& it : items) pos_[it.slot] += it.n;
  return logits_host_.data();
}

}  // namespace tandem
