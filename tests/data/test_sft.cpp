// SFT examples: both JSONL formats, the masks (which tokens are taught), the rows the loader
// builds, its per-epoch permutation, and one named error per kind of bad line.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "data_test_util.h"
#include "tandem/data/chat.h"
#include "tandem/data/sft.h"
#include "tandem/data/tokenizer.h"

namespace tandem {
namespace {

using test::error_of;
using test::TempDir;

class SftTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string corpus = dir_.file("corpus.txt");
    test::write_text(corpus, test::make_corpus(400));
    train_tokenizer({corpus}, dir_.file("tok"), 400);
    tok_ = std::make_unique<Tokenizer>(Tokenizer::load(dir_.file("tok.model")));
  }
  std::string jsonl(const std::string& text) {
    const std::string p = dir_.file("ex" + std::to_string(n_++) + ".jsonl");
    test::write_text(p, text);
    return p;
  }
  // The taught tokens of an example, decoded.
  std::string taught(const SftExample& e) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < e.tokens.size(); ++i)
      if (e.target[i]) ids.push_back(e.tokens[i]);
    return tok_->decode(ids);
  }
  TempDir dir_;
  std::unique_ptr<Tokenizer> tok_;
  int n_ = 0;
};

TEST_F(SftTest, AChatTeachesOnlyTheAssistantTurnsAndTheirEndOfTurn) {
  auto ex = load_sft_examples(
      jsonl(R"({"messages": [{"role": "system", "content": "Be brief."},)"
            R"({"role": "user", "content": "the king said"}, {"role": "assistant", "content": "unto moses"},)"
            R"({"role": "user", "content": "and"}, {"role": "assistant", "content": "it came"}]})"
            "\n"),
      *tok_, {});
  ASSERT_EQ(ex.size(), 1u);
  const SftExample& e = ex[0];
  // The tokens are what serving the chat would feed the model, with <s> first.
  std::vector<int32_t> want = {tok_->bos_id()};
  for (int32_t t : tok_->encode_with_specials(render_chat_template(
           {{"system", "Be brief."}, {"user", "the king said"}, {"assistant", "unto moses"},
            {"user", "and"}, {"assistant", "it came"}},
           false)))
    want.push_back(t);
  EXPECT_EQ(e.tokens, want);
  EXPECT_EQ(e.target[0], 0);
  // The taught tokens decode to the two replies, each with its <|im_end|>.
  const int32_t end = tok_->piece_id(kTurnEnd);
  std::vector<int32_t> ends;
  for (size_t i = 0; i < e.tokens.size(); ++i)
    if (e.target[i] && e.tokens[i] == end) ends.push_back((int32_t)i);
  EXPECT_EQ(ends.size(), 2u);
  const std::string t = taught(e);
  EXPECT_NE(t.find("unto moses"), std::string::npos) << t;
  EXPECT_NE(t.find("it came"), std::string::npos) << t;
  EXPECT_EQ(t.find("king"), std::string::npos) << t;
  EXPECT_EQ(t.find("brief"), std::string::npos) << t;
  EXPECT_EQ(t.find("assistant"), std::string::npos) << t;
  // loss_on = all teaches every token after <s>.
  SftOptions all;
  all.loss_on = "all";
  auto every = load_sft_examples(dir_.file("ex0.jsonl"), *tok_, all);
  EXPECT_EQ(std::count(every[0].target.begin(), every[0].target.end(), 1),
            (long)every[0].tokens.size() - 1);
}

TEST_F(SftTest, APromptAndCompletionTeachesTheCompletionAndEos) {
  auto ex = load_sft_examples(
      jsonl("{\"prompt\": \"the king said unto\", \"completion\": \" moses\"}\n\n"), *tok_, {});
  ASSERT_EQ(ex.size(), 1u);  // the blank line is skipped
  const SftExample& e = ex[0];
  EXPECT_EQ(e.tokens.front(), tok_->bos_id());
  EXPECT_EQ(e.tokens.back(), tok_->eos_id());
  EXPECT_EQ(e.target.back(), 1);
  std::vector<int32_t> prompt = tok_->encode("the king said unto");
  for (size_t i = 0; i <= prompt.size(); ++i) EXPECT_EQ(e.target[i], 0) << i;
  EXPECT_NE(taught(e).find("moses"), std::string::npos);
  EXPECT_EQ(taught(e).find("king"), std::string::npos);
}

TEST_F(SftTest, RowsShiftTargetsMaskTheRestAndEpochsArePermutations) {
  std::string text;
  for (int i = 0; i < 7; ++i)
    text += "{\"prompt\": \"the king\", \"completion\": \" " + std::string(i + 1, 'a') + "\"}\n";
  SftLoader loader(load_sft_examples(jsonl(text), *tok_, {}), 2, 24, 5);
  std::vector<int32_t> in(24), tg(24);
  loader.fill_example(3, in.data(), tg.data());
  auto ex = load_sft_examples(dir_.file("ex0.jsonl"), *tok_, {});
  const SftExample& e = ex[3];
  for (size_t t = 0; t < 24; ++t) {
    EXPECT_EQ(in[t], t < e.tokens.size() ? e.tokens[t] : 0) << t;
    const bool taught = t + 1 < e.tokens.size() && e.target[t + 1];
    EXPECT_EQ(tg[t], taught ? e.tokens[t + 1] : -1) << t;
  }
  // Each epoch visits every example once, in an order that changes between epochs and is the
  // same for another loader with the same seed.
  SftLoader again(load_sft_examples(dir_.file("ex0.jsonl"), *tok_, {}), 2, 24, 5);
  std::vector<size_t> e0, e1;
  for (int64_t s = 0; s < 7; ++s) e0.push_back(loader.example_of(s));
  for (int64_t s = 7; s < 14; ++s) e1.push_back(loader.example_of(s));
  EXPECT_EQ(std::set<size_t>(e0.begin(), e0.end()).size(), 7u);
  EXPECT_EQ(std::set<size_t>(e1.begin(), e1.end()).size(), 7u);
  EXPECT_NE(e0, e1);
  for (int64_t s = 13; s >= 0; --s) EXPECT_EQ(again.example_of(s), s < 7 ? e0[s] : e1[s - 7]);
}

TEST_F(SftTest, PackedRowsHoldWholeExamplesWithTheirDocumentStarts) {
  std::string text;
  for (int i = 0; i < 9; ++i)
    text += "{\"prompt\": \"the king\", \"completion\": \" " + std::string(i + 1, 'a') + "\"}\n";
  const auto ex = load_sft_examples(jsonl(text), *tok_, {});
  const int T = 24, B = 1;
  SftLoader loader(ex, B, T, 5, true);
  std::vector<int32_t> in(T), tg(T), ds(T);
  // Rows of the first two epochs: every example exactly once per epoch, each at a document
  // start, with the inputs and targets it has alone; a row never overflows.
  std::multiset<size_t> seen;
  int64_t row = 0;
  for (; seen.size() < 2 * ex.size(); ++row) {
    ASSERT_LT(row, 100) << "packing never covers the epochs";
    loader.fill(row, in.data(), tg.data(), ds.data());
    for (int t = 0; t < T;) {
      const int start = ds[(size_t)t];
      ASSERT_EQ(start, t) << "a document starts where the previous one ended";
      int end = t;
      while (end < T && ds[(size_t)end] == start) ++end;
      if (in[(size_t)t] == 0) break;  // padding to the end of the row
      // Find the example this document is.
      bool found = false;
      for (size_t i = 0; i < ex.size() && !found; ++i) {
        const SftExample& e = ex[i];
        if ((int)e.tokens.size() - 1 != end - t) continue;
        bool same = true;
        for (int k = 0; k < end - t && same; ++k)
          same = in[(size_t)(t + k)] == e.tokens[(size_t)k] &&
                 tg[(size_t)(t + k)] == (e.target[(size_t)k + 1] ? e.tokens[(size_t)k + 1] : -1);
        if (same) seen.insert(i), found = true;
      }
      ASSERT_TRUE(found) << "row " << row << " position " << t;
      t = end;
    }
  }
  for (size_t i = 0; i < ex.size(); ++i) EXPECT_EQ(seen.count(i), 2u) << i;
  EXPECT_LT(row, 2 * (int64_t)ex.size()) << "rows hold more than one example";
}

TEST_F(SftTest, EachBadLineIsNamedByFileAndLine) {
  auto err = [&](const std::string& text, const SftOptions& o = {}) {
    const std::string p = jsonl(text);
    return error_of([&] { load_sft_examples(p, *tok_, o); });
  };
  const std::string good = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
  std::string e = err(good + "{not json\n");
  EXPECT_NE(e.find(".jsonl:2: not a JSON object"), std::string::npos) << e;
  e = err(good + good + R"({"messages": [{"role": "robot", "content": "x"}]})" "\n");
  EXPECT_NE(e.find(":3: messages[0]: unknown role 'robot'"), std::string::npos) << e;
  e = err("{\"prompt\": \"a\", \"completion\": \"\"}\n");
  EXPECT_NE(e.find(":1: the completion is empty"), std::string::npos) << e;
  e = err(R"({"messages": [{"role": "user", "content": "hi"}]})" "\n");
  EXPECT_NE(e.find("no assistant turn"), std::string::npos) << e;
  e = err(R"({"messages": [{"role": "user", "content": 3}]})" "\n");
  EXPECT_NE(e.find("\"content\" must be a string"), std::string::npos) << e;
  e = err("{\"text\": \"x\"}\n");
  EXPECT_NE(e.find("expected {\"messages\""), std::string::npos) << e;
  SftOptions short_rows;
  short_rows.seq_len = 4;
  e = err("{\"prompt\": \"the king said unto moses\", \"completion\": \" and it came\"}\n",
          short_rows);
  EXPECT_NE(e.find("a row holds train.seq_len + 1 = 5"), std::string::npos) << e;
  e = err("\n\n");
  EXPECT_NE(e.find("holds no examples"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { load_sft_examples(dir_.file("missing.jsonl"), *tok_, {}); })
                .find("cannot open"),
            std::string::npos);
}

TEST_F(SftTest, AChatNeedsATokenizerWithTheChatTokens) {
  TokenizerTrainOptions o;
  o.reserve = false;
  const std::string corpus = dir_.file("c2.txt");
  test::write_text(corpus, test::make_corpus(200));
  train_tokenizer({corpus}, dir_.file("old"), 400, o);
  Tokenizer old = Tokenizer::load(dir_.file("old.model"));
  const std::string p =
      jsonl(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})" "\n");
  const std::string e = error_of([&] { load_sft_examples(p, old, {}); });
  EXPECT_NE(e.find("prepared without them"), std::string::npos) << e;
  // Prompt and completion needs no chat tokens.
  EXPECT_EQ(load_sft_examples(jsonl("{\"prompt\": \"a\", \"completion\": \"b\"}\n"), old, {}).size(), 1u);
}

}  // namespace
}  // namespace tandem
