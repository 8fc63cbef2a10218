// KvEngine against the training forward: incremental decoding with a KV cache must produce the
// same logits (to float rounding) and the same greedy tokens as recomputing the whole sequence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <ostream>
#include <vector>

#include "../model/model_test_util.h"
#include "tandem/backend/backend.h"
#include "tandem/core/error.h"
#include "tandem/core/rng.h"
#include "tandem/infer/kv_engine.h"
#include "tandem/infer/sampler.h"
#include "tandem/model/llama.h"

namespace tandem {
namespace {

ModelConfig kv_config(int kv_heads, bool tied) {
  ModelConfig c;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = kv_heads;
  c.hidden_dim = 128;
  c.vocab_size = 300;
  c.context = 32;
  c.tie_embeddings = tied;
  return c;
}

// Weights with non-trivial scale (shared with the model tests): the default N(0, 0.02) gives
// nearly uniform attention and logits, where greedy ties hide bugs.
void init_sharp(Llama& m, uint64_t seed) { test::init_test_weights(m, seed); }

// Logits predicting the token after `tokens`, by a full forward over all of them.
std::vector<float> full_logits(Llama& m, const std::vector<int32_t>& tokens) {
  const int T = (int)tokens.size(), V = m.config().vocab_size;
  m.forward(tokens.data(), 1, T);
  std::vector<float> out(V);
  m.backend().to_host(out.data(), m.logits() + (size_t)(T - 1) * V, V * sizeof(float));
  return out;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, (double)std::fabs(a[i] - b[i]));
    den = std::max(den, (double)std::fabs(b[i]));
  }
  return num / std::max(den, 1e-30);
}

struct KvCase {
  const char* name;
  int kv_heads;
  bool tied;
};
inline void PrintTo(const KvCase& c, std::ostream* os) { *os << c.name; }

class KvCache : public ::testing::TestWithParam<KvCase> {
 protected:
  void SetUp() override {
    be_ = make_backend("cpu", 2);
    model_ = std::make_unique<Llama>(kv_config(GetParam().kv_heads, GetParam().tied), *be_);
    init_sharp(*model_, 4242);
    model_->reserve(1, model_->config().context);
  }
  std::vector<int32_t> prompt() const { return {1, 17, 250, 3, 99, 42}; }
  std::unique_ptr<Backend> be_;
  std::unique_ptr<Llama> model_;
};

TEST_P(KvCache, GreedyDecodingMatchesFullRecompute) {
  Llama& m = *model_;
  const int n_new = 20;
  std::vector<int32_t> full = prompt(), kv = prompt();
  KvEngine eng(m, m.config().context);
  const std::vector<float>* lg = &eng.feed(kv.data(), (int)kv.size());
  double worst = 0;
  for (int i = 0; i < n_new; ++i) {
    std::vector<float> ref = full_logits(m, full);
    const double e = rel_err(*lg, ref);
    worst = std::max(worst, e);
    EXPECT_LT(e, 1e-4) << "position " << full.size();
    const int32_t want = argmax(ref), got = argmax(*lg);
    ASSERT_EQ(got, want) << "token " << i << " after " << full.size() << " positions";
    full.push_back(want);
    kv.push_back(got);
    EXPECT_EQ(eng.position(), (int)kv.size() - 1);
    lg = &eng.feed(&got, 1);
  }
  EXPECT_EQ(full, kv);
  EXPECT_EQ(eng.position(), (int)prompt().size() + n_new);
  RecordProperty("max_rel_err", std::to_string(worst));
}

// A random model's greedy chain may settle on one repeated token; forcing varied tokens makes
// sure the cache is compared against every kind of history, up to the full context.
TEST_P(KvCache, ForcedTokensMatchFullRecompute) {
  Llama& m = *model_;
  const int ctx = m.config().context;
  std::vector<int32_t> seq = prompt();
  KvEngine eng(m, ctx);
  std::vector<float> lg = eng.feed(seq.data(), (int)seq.size());
  while (true) {
    EXPECT_LT(rel_err(lg, full_logits(m, seq)), 1e-4) << "position " << seq.size();
    if ((int)seq.size() == ctx) break;
    const int32_t t = (int32_t)(rng_u64(5, 6, seq.size()) % m.config().vocab_size);
    seq.push_back(t);
    lg = eng.feed(&t, 1);
  }
  EXPECT_EQ(eng.position(), ctx);
}

TEST_P(KvCache, PromptAtOnceEqualsTokenByToken) {
  Llama& m = *model_;
  std::vector<int32_t> p = prompt();
  KvEngine all(m, 16), one(m, 16);
  std::vector<float> a = all.feed(p.data(), (int)p.size());
  std::vector<float> b;
  for (int32_t t : p) b = one.feed(&t, 1);
  EXPECT_LT(rel_err(a, b), 1e-4);
  EXPECT_LT(rel_err(a, full_logits(m, p)), 1e-4);
  // Chunks of a continued sequence: [p, p[0..2]] fed as two calls equals one call.
  std::vector<int32_t> q = {p[0], p[1], p[2]};
  std::vector<float> c = all.feed(q.data(), 3);
  std::vector<int32_t> pq = p;
  pq.insert(pq.end(), q.begin(), q.end());
  EXPECT_LT(rel_err(c, full_logits(m, pq)), 1e-4);
}

TEST_P(KvCache, ResetReproducesBitsAndCapacityIsEnforced) {
  Llama& m = *model_;
  std::vector<int32_t> p = prompt();
  KvEngine eng(m, 8);
  EXPECT_EQ(eng.capacity(), 8);
  std::vector<float> first = eng.feed(p.data(), (int)p.size());
  int32_t t = 5;
  eng.feed(&t, 1);
  eng.reset();
  EXPECT_EQ(eng.position(), 0);
  std::vector<float> again = eng.feed(p.data(), (int)p.size());
  EXPECT_EQ(first, again);  // bit-identical: nothing stale survives reset()
  eng.feed(&t, 1);
  eng.feed(&t, 1);  // position 8 = capacity
  try {
    eng.feed(&t, 1);
    ADD_FAILURE() << "feeding past the capacity must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, KvCache,
                         ::testing::Values(KvCase{"gqa_tied", 2, true},
                                           KvCase{"mha_untied", 4, false},
                                           KvCase{"mqa_tied", 1, true}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tandem
