// Tokenizer tests: training on a generated corpus, lossless round trips (byte fallback),
// streaming decode, determinism, and the error messages for bad inputs.
#include <gtest/gtest.h>

#include <random>

#include "data_test_util.h"
#include "tandem/core/hash.h"
#include "tandem/data/chat.h"
#include "tandem/data/tokenizer.h"

namespace tandem {
namespace {

using test::error_of;
using test::TempDir;

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    corpus_ = dir_.file("corpus.txt");
    test::write_text(corpus_, test::make_corpus(400));
    train_tokenizer({corpus_}, dir_.file("tok"), 400);
  }
  Tokenizer load() const { return Tokenizer::load(dir_.file("tok.model")); }

  TempDir dir_;
  std::string corpus_;
};

TEST_F(TokenizerTest, TrainsRequestedVocabWithSpecialIds) {
  Tokenizer tok = load();
  EXPECT_EQ(tok.vocab_size(), 400);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.id_to_piece(3), "<|im_start|>");  // reserved for the chat format
  EXPECT_EQ(tok.id_to_piece(4), "<|im_end|>");
  EXPECT_EQ(tok.id_to_piece(5), "<0x00>");
  EXPECT_EQ(tok.sha256(), sha256_file(dir_.file("tok.model")));
  EXPECT_TRUE(std::filesystem::exists(dir_.file("tok.vocab")));
  // Merges were learned: a common word is shorter than its letters.
  EXPECT_LT(tok.encode("behold the children").size(), 10u);
}

TEST_F(TokenizerTest, RoundTripsAsciiAndNonAsciiText) {
  Tokenizer tok = load();
  for (std::string text : {"And the lord said unto Moses, 12:34.", "  two  spaces\tand tab ",
                           "naïve café — 日本語 🙂 Ωmega", "\n"}) {
    auto ids = tok.encode(text);
    EXPECT_EQ(tok.decode(ids), text) << text;
  }
  // Characters absent from the corpus must use byte pieces, not <unk> (id 0).
  auto ids = tok.encode("日本語");
  EXPECT_EQ(ids.size() >= 9, true);  // 3 characters x 3 UTF-8 bytes
  for (int32_t id : ids) EXPECT_NE(id, 0);
  int bytes = 0;
  for (int32_t id : ids) bytes += tok.id_to_piece(id).starts_with("<0x");
  EXPECT_EQ(bytes, 9);
}

TEST_F(TokenizerTest, StreamingDeltasConcatenateToFullDecode) {
  Tokenizer tok = load();
  std::string text;  // long enough that decode_piece must window correctly
  for (int rep = 0; rep < 3; ++rep)
    text += "Behold, the king said: ünïcödé 日本 🙂 and 12 rivers. ";
  std::vector<int32_t> all = tok.encode(text);
  all.insert(all.begin(), tok.bos_id());
  all.push_back(tok.eos_id());
  std::string streamed;
  for (size_t n = 1; n <= all.size(); ++n) {
    std::string delta = tok.decode_piece(std::span<const int32_t>(all).first(n));
    EXPECT_EQ(delta.find("\xEF\xBF\xBD"), std::string::npos) << "replacement char at " << n;
    streamed += delta;
  }
  EXPECT_EQ(streamed, tok.decode(all));
  EXPECT_EQ(streamed, text);
}

// Generated text can be any id sequence, including broken UTF-8 byte runs and control ids.
TEST_F(TokenizerTest, StreamingMatchesFullDecodeOnRandomIdSequences) {
  Tokenizer tok = load();
  std::mt19937 rng(5);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<int32_t> ids;
    int n = 1 + static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) {
      uint32_t r = rng() % 10;
      // Mostly non-ASCII byte pieces (ids 3 + 0x80..), some control ids and ordinary pieces.
      ids.push_back(r < 5   ? 3 + 0x80 + static_cast<int32_t>(rng() % 0x78)
                    : r < 6 ? 1 + static_cast<int32_t>(rng() % 2)
                            : 259 + static_cast<int32_t>(rng() % 141));
    }
    ids.push_back(300);  // end on an ordinary piece so no bytes are held back
    std::string streamed;
    for (size_t k = 1; k <= ids.size(); ++k) {
      streamed += tok.decode_piece(std::span<const int32_t>(ids).first(k));
    }
    ASSERT_EQ(streamed, tok.decode(ids)) << "trial " << trial;
  }
}

TEST_F(TokenizerTest, DecodeRejectsOutOfRangeIds) {
  Tokenizer tok = load();
  std::vector<int32_t> ids = {5, 400};
  EXPECT_NE(error_of([&] { tok.decode(ids); }).find("400"), std::string::npos);
}

TEST_F(TokenizerTest, TrainingIsDeterministic) {
  train_tokenizer({corpus_}, dir_.file("again"), 400);
  EXPECT_EQ(sha256_file(dir_.file("again.model")), sha256_file(dir_.file("tok.model")));
}

TEST_F(TokenizerTest, ReservedChatTokensAreWholeTokensTheCorpusNeverProduces) {
  Tokenizer tok = load();
  EXPECT_TRUE(has_chat_format(tok));
  EXPECT_EQ(tok.reserved(), kReservedPieces);
  EXPECT_EQ(tok.piece_id(kTurnStart), 3);
  EXPECT_EQ(tok.piece_id(kTurnEnd), 4);
  EXPECT_EQ(tok.piece_id("no such piece"), -1);
  const auto pieces = tok.pieces();
  EXPECT_EQ(pieces[3].type, 4);  // GGUF's user-defined
  EXPECT_EQ(pieces[5].type, 6);  // a byte
  for (int32_t id : tok.encode(test::make_corpus(50))) EXPECT_TRUE(id != 3 && id != 4);
  // Between reserved tokens, each stretch of text is encoded on its own.
  std::vector<int32_t> want = {3};
  for (int32_t t : tok.encode("user\nhi there")) want.push_back(t);
  want.push_back(4);
  for (int32_t t : tok.encode("\n")) want.push_back(t);
  want.push_back(3);
  EXPECT_EQ(tok.encode_with_specials("<|im_start|>user\nhi there<|im_end|>\n<|im_start|>"), want);
  EXPECT_EQ(tok.encode_with_specials("plain text"), tok.encode("plain text"));
  EXPECT_EQ(tok.encode_with_specials(""), std::vector<int32_t>{});
}

TEST_F(TokenizerTest, ATokenizerTrainedWithoutReservedTokensHasNoChatFormat) {
  TokenizerTrainOptions o;
  o.reserve = false;  // as every tokenizer was before the chat format
  train_tokenizer({corpus_}, dir_.file("old"), 400, o);
  Tokenizer tok = Tokenizer::load(dir_.file("old.model"));
  EXPECT_FALSE(has_chat_format(tok));
  EXPECT_TRUE(tok.reserved().empty());
  EXPECT_EQ(tok.id_to_piece(3), "<0x00>");
  EXPECT_EQ(tok.encode_with_specials("User: hi"), tok.encode("User: hi"));
}

TEST(ChatTemplate, RendersChatMLTurnsAndTheGenerationPrompt) {
  const std::vector<ChatMessage> m = {{"system", "Be brief."}, {"user", "2+2?"},
                                      {"assistant", "4"}};
  EXPECT_EQ(render_chat_template(m, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n4<|im_end|>\n");
  EXPECT_EQ(render_chat_template({{"user", "hi"}}, true),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  // The Jinja twin names the same markers (llama.cpp renders it in tests/export).
  EXPECT_NE(chat_template_jinja().find("'<|im_start|>' + message['role'] + '\\n'"),
            std::string::npos);
}

TEST(TokenizerErrors, LoadNamesTheMissingOrBadFile) {
  TempDir dir;
  std::string missing = dir.file("nope.model");
  std::string msg = error_of([&] { Tokenizer::load(missing); });
  EXPECT_TRUE(msg.starts_with("[tokenizer]")) << msg;
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;

  std::string junk = dir.file("junk.model");
  test::write_text(junk, "this is not a protobuf");
  msg = error_of([&] { Tokenizer::load(junk); });
  EXPECT_NE(msg.find(junk), std::string::npos) << msg;
}

TEST(TokenizerErrors, TrainingRejectsBadInputsWithClearMessages) {
  TempDir dir;
  std::string missing = dir.file("missing.txt");
  std::string msg = error_of([&] { train_tokenizer({missing}, dir.file("t"), 400); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;

  std::string blank = dir.file("blank.txt");
  test::write_text(blank, "  \n\t\n\n");
  msg = error_of([&] { train_tokenizer({blank}, dir.file("t"), 400); });
  EXPECT_NE(msg.find(blank), std::string::npos) << msg;
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;

  std::string small = dir.file("small.txt");
  test::write_text(small, test::make_corpus(20));
  msg = error_of([&] { train_tokenizer({small}, dir.file("t"), 50000); });
  EXPECT_TRUE(msg.starts_with("[tokenizer]")) << msg;
  EXPECT_NE(msg.find("50000"), std::string::npos) << msg;

  msg = error_of([&] { train_tokenizer({small}, dir.file("t"), 100); });
  EXPECT_NE(msg.find("100"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(dir.file("t.model")));
}

}  // namespace
}  // namespace tandem
