// BatchEngine against the training forward (OpenBLAS GEMMs, full causal attention): incremental
// decoding with a KV cache gives the same logits to float rounding and the same greedy tokens
// as recomputing the whole sequence. Batching: a sequence's logits are bit-identical whether it
// runs alone or beside others, for fp32, int8 and q4 weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <ostream>
#include <vector>

#include "../model/model_test_util.h"
#include "tandem/backend/backend.h"
#include "tandem/core/error.h"
#include "tandem/core/rng.h"
#include "tandem/infer/engine.h"
#include "tandem/infer/quant.h"
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

// Logits predicting the token after `tokens`, by a full training forward over all of them.
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

class Engine : public ::testing::TestWithParam<KvCase> {
 protected:
  void SetUp() override {
    be_ = make_backend("cpu", 2);
    model_ = std::make_unique<Llama>(kv_config(GetParam().kv_heads, GetParam().tied), *be_);
    // Weights with non-trivial scale: N(0, 0.02) gives nearly uniform logits where greedy
    // ties hide bugs.
    test::init_test_weights(*model_, 4242);
    model_->reserve(1, model_->config().context);
    host_.resize(model_->num_params());
    model_->save_params(host_.data());
  }
  std::unique_ptr<InferModel> infer(WType t) {
    return std::make_unique<InferModel>(model_->config(), host_.data(), *be_, t);
  }
  std::vector<int32_t> prompt() const { return {1, 17, 250, 3, 99, 42}; }
  std::unique_ptr<Backend> be_;
  std::unique_ptr<Llama> model_;
  std::vector<float> host_;
};

// Feeds n tokens to one slot and returns its last-row logits.
std::vector<float> feed(BatchEngine& e, int slot, const int32_t* t, int n) {
  BatchEngine::Item it{slot, t, n, false};
  const float* lg = e.step({&it, 1});
  return std::vector<float>(lg, lg + e.model().config().vocab_size);
}

TEST_P(Engine, GreedyDecodingMatchesFullRecompute) {
  Llama& m = *model_;
  auto im = infer(WType::F32);
  BatchEngine eng(*im, EngineOptions{});
  const int n_new = 20;
  std::vector<int32_t> full = prompt(), kv = prompt();
  std::vector<float> lg = feed(eng, 0, kv.data(), (int)kv.size());
  for (int i = 0; i < n_new; ++i) {
    std::vector<float> ref = full_logits(m, full);
    EXPECT_LT(rel_err(lg, ref), 1e-4) << "position " << full.size();
    const int32_t want = argmax(ref), got = argmax(lg);
    ASSERT_EQ(got, want) << "token " << i << " after " << full.size() << " positions";
    full.push_back(want);
    kv.push_back(got);
    EXPECT_EQ(eng.position(0), (int)kv.size() - 1);
    lg = feed(eng, 0, &got, 1);
  }
  EXPECT_EQ(eng.position(0), (int)prompt().size() + n_new);
}

// Forcing varied tokens compares the cache against every kind of history, up to the context.
TEST_P(Engine, ForcedTokensMatchFullRecompute) {
  Llama& m = *model_;
  auto im = infer(WType::F32);
  BatchEngine eng(*im, EngineOptions{});
  const int ctx = m.config().context;
  std::vector<int32_t> seq = prompt();
  std::vector<float> lg = feed(eng, 0, seq.data(), (int)seq.size());
  while (true) {
    EXPECT_LT(rel_err(lg, full_logits(m, seq)), 1e-4) << "position " << seq.size();
    if ((int)seq.size() == ctx) break;
    const int32_t t = (int32_t)(rng_u64(5, 6, seq.size()) % m.config().vocab_size);
    seq.push_back(t);
    lg = feed(eng, 0, &t, 1);
  }
  EXPECT_EQ(eng.position(0), ctx);
}

TEST_P(Engine, AllLogitsMatchTheTrainingForwardAtEveryPosition) {
  Llama& m = *model_;
  auto im = infer(WType::F32);
  const std::vector<int32_t> p = prompt();
  const int V = m.config().vocab_size, T = (int)p.size();
  BatchEngine eng(*im, EngineOptions{1, 0, 0, T});
  BatchEngine::Item it{0, p.data(), T, true};
  const float* lg = eng.step({&it, 1});
  m.forward(p.data(), 1, T);
  std::vector<float> ref((size_t)T * V);
  be_->to_host(ref.data(), m.logits(), ref.size() * sizeof(float));
  EXPECT_LT(rel_err(std::vector<float>(lg, lg + ref.size()), ref), 1e-4);
}

TEST_P(Engine, BatchedSequencesGiveTheSameBitsAsAlone) {
  const int V = model_->config().vocab_size;
  for (WType t : {WType::F32, WType::Q8, WType::Q4}) {
    auto im = infer(t);
    // Three sequences with different prompts; alone, each is prefilled then decodes 6 tokens.
    std::vector<std::vector<int32_t>> prompts = {prompt(), {1, 5, 9}, {1, 200, 201, 202, 7, 8, 9}};
    std::vector<std::vector<std::vector<float>>> alone(3);
    for (int s = 0; s < 3; ++s) {
      BatchEngine e(*im, EngineOptions{});
      auto lg = feed(e, 0, prompts[s].data(), (int)prompts[s].size());
      alone[s].push_back(lg);
      for (int i = 0; i < 6; ++i) {
        int32_t next = argmax(lg);
        lg = feed(e, 0, &next, 1);
        alone[s].push_back(lg);
      }
    }
    // Together, with staggered starts: sequence s joins at step s, so prefills of one share
    // steps with decodes of the others.
    BatchEngine e(*im, EngineOptions{3, 0, 64, 3});
    std::vector<int> done(3, 0);
    std::vector<int32_t> last(3);
    for (int stepi = 0; stepi < 10; ++stepi) {
      std::vector<BatchEngine::Item> items;
      std::vector<int> who;
      for (int s = 0; s < 3; ++s) {
        if (stepi < s || done[s] >= 7) continue;
        if (done[s] == 0)
          items.push_back({s, prompts[s].data(), (int)prompts[s].size(), false});
        else
          items.push_back({s, &last[s], 1, false});
        who.push_back(s);
      }
      if (items.empty()) break;
      const float* lg = e.step(items);
      for (size_t i = 0; i < who.size(); ++i) {
        const int s = who[i];
        std::vector<float> got(lg + i * V, lg + (i + 1) * V);
        EXPECT_EQ(0, std::memcmp(got.data(), alone[s][done[s]].data(), V * sizeof(float)))
            << quant_name(t) << ": sequence " << s << " output " << done[s];
        last[s] = argmax(got);
        ++done[s];
      }
    }
    EXPECT_EQ(done, (std::vector<int>{7, 7, 7})) << quant_name(t);
  }
}

TEST_P(Engine, QuantizedLogitsStayCloseToFp32) {
  auto f = infer(WType::F32), q8 = infer(WType::Q8), q4 = infer(WType::Q4);
  const std::vector<int32_t> p = prompt();
  BatchEngine ef(*f, EngineOptions{}), e8(*q8, EngineOptions{}), e4(*q4, EngineOptions{});
  const auto lf = feed(ef, 0, p.data(), (int)p.size());
  EXPECT_LT(rel_err(feed(e8, 0, p.data(), (int)p.size()), lf), 0.05);
  EXPECT_LT(rel_err(feed(e4, 0, p.data(), (int)p.size()), lf), 0.4);
  EXPECT_LT(q8->weight_bytes() * 3, f->weight_bytes());  // ~4.3x smaller incl. scales
  EXPECT_LT(q4->weight_bytes() * 6, f->weight_bytes());  // ~7x smaller
}

TEST_P(Engine, ResetReproducesBitsAndLimitsAreEnforced) {
  auto im = infer(WType::F32);
  std::vector<int32_t> p = prompt();
  BatchEngine eng(*im, EngineOptions{2, 8, 0, 0});
  std::vector<float> first = feed(eng, 1, p.data(), (int)p.size());
  int32_t t = 5;
  feed(eng, 1, &t, 1);
  eng.reset(1);
  EXPECT_EQ(eng.position(1), 0);
  EXPECT_EQ(first, feed(eng, 1, p.data(), (int)p.size()));  // nothing stale survives reset
  feed(eng, 1, &t, 1);
  feed(eng, 1, &t, 1);  // position 8 = capacity
  try {
    feed(eng, 1, &t, 1);
    ADD_FAILURE() << "feeding past the capacity must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context"), std::string::npos) << e.what();
  }
  EXPECT_EQ(eng.position(1), 8);  // the failed step changed nothing
  std::vector<int32_t> nine(9, 3);
  try {
    feed(eng, 0, nine.data(), 9);
    ADD_FAILURE() << "9 tokens in a step with a limit of 8 must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceed"), std::string::npos) << e.what();
  }
  for (int32_t bad : {-1, im->config().vocab_size}) {
    try {
      feed(eng, 0, &bad, 1);
      ADD_FAILURE() << "token id " << bad << " must throw";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("vocabulary"), std::string::npos) << e.what();
    }
    EXPECT_EQ(eng.position(0), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Engine,
                         ::testing::Values(KvCase{"gqa_tied", 2, true},
                                           KvCase{"mha_untied", 4, false},
                                           KvCase{"mqa_tied", 1, true}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tandem
