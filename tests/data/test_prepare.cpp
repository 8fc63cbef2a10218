// prepare_dataset tests: a full run into a temp dir, and failures that must leave no output
// behind and never touch existing user data.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "data_test_util.h"
#include "tandem/core/fs.h"
#include "tandem/core/hash.h"
#include "tandem/data/corpus.h"
#include "tandem/data/prepare.h"
#include "tandem/data/shard.h"
#include "tandem/data/tokenizer.h"

namespace tandem {
namespace {

using test::error_of;
using test::TempDir;

std::vector<std::string> documents(const std::string& text) {
  std::vector<std::string> docs;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (has_text(line)) docs.push_back(line);
  }
  return docs;
}

// Only the named entries exist in `dir` (no staging directories left over).
std::vector<std::string> entries(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

PrepareOptions options(const TempDir& dir, std::vector<std::string> inputs) {
  PrepareOptions o;
  o.input_files = std::move(inputs);
  o.out_dir = dir.file("ds");
  o.vocab_size = 400;
  o.val_fraction = 0.1;
  o.quiet = true;
  return o;
}

TEST(Prepare, BuildsACompleteConsistentDataset) {
  TempDir dir;
  std::string a = test::make_corpus(300, 1), b = "\xEF\xBB\xBF" + test::make_corpus(100, 2);
  test::write_text(dir.file("a.txt"), a);
  test::write_text(dir.file("b.txt"), b);
  PrepareResult r = prepare_dataset(options(dir, {dir.file("a.txt"), dir.file("b.txt")}));

  const std::string ds = dir.file("ds");
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"a.txt", "b.txt", "ds"}));
  EXPECT_EQ(entries(ds), (std::vector<std::string>{"dataset.json", "tokenizer.model",
                                                   "tokenizer.vocab", "train.bin", "val.bin"}));
  auto docs = documents(a);
  auto docs_b = documents(b.substr(3));  // the BOM is not part of the first document
  docs.insert(docs.end(), docs_b.begin(), docs_b.end());
  EXPECT_EQ(r.train_documents + r.val_documents, static_cast<int64_t>(docs.size()));
  EXPECT_EQ(r.val_documents, 40);  // 10% of 400 lines; blank lines are not documents

  auto j = nlohmann::json::parse(read_file(ds + "/dataset.json"));
  EXPECT_EQ(j["tokenizer"]["sha256"], sha256_file(ds + "/tokenizer.model"));
  EXPECT_EQ(j["tokenizer"]["sha256"], r.tokenizer_sha256);
  EXPECT_EQ(j["tokenizer"]["vocab_size"], 400);
  EXPECT_EQ(j["sources"].size(), 2u);
  EXPECT_EQ(j["sources"][1]["sha256"], sha256_file(dir.file("b.txt")));

  Tokenizer tok = Tokenizer::load(ds + "/tokenizer.model");
  ShardReader train(ds + "/train.bin"), val(ds + "/val.bin");
  EXPECT_EQ(train.size(), r.train_tokens);
  EXPECT_EQ(val.size(), r.val_tokens);
  EXPECT_EQ(j["splits"]["train"]["tokens"], train.size());
  EXPECT_EQ(j["splits"]["val"]["payload_sha256"], val.payload_sha256());
  EXPECT_EQ(train.vocab_size(), 400u);

  // Each document is <s> tokens </s>; the first of each split decodes to its source line.
  auto first_doc = [&](const ShardReader& s) {
    EXPECT_EQ(s.token(0), tok.bos_id());
    std::vector<int32_t> ids;
    for (int64_t i = 1; s.token(i) != tok.eos_id(); ++i) ids.push_back(s.token(i));
    return tok.decode(ids);
  };
  EXPECT_EQ(first_doc(train), docs.front());
  EXPECT_EQ(first_doc(val), docs[r.train_documents]);
  EXPECT_EQ(val.token(val.size() - 1), tok.eos_id());
  int64_t bos = 0;
  for (int64_t i = 0; i < val.size(); ++i) bos += val.token(i) == tok.bos_id();
  EXPECT_EQ(bos, r.val_documents);
}

TEST(Prepare, RefusesToReplaceExistingDataUnlessAsked) {
  TempDir dir;
  test::write_text(dir.file("a.txt"), test::make_corpus(200));
  auto opt = options(dir, {dir.file("a.txt")});
  prepare_dataset(opt);
  std::string before = sha256_file(dir.file("ds/train.bin"));

  std::string msg = error_of([&] { prepare_dataset(opt); });
  EXPECT_NE(msg.find("already holds a dataset"), std::string::npos) << msg;

  // A failing overwrite (vocab too large for this corpus) keeps the old dataset intact.
  opt.overwrite = true;
  opt.vocab_size = 60000;
  msg = error_of([&] { prepare_dataset(opt); });
  EXPECT_TRUE(msg.starts_with("[tokenizer]")) << msg;
  EXPECT_EQ(sha256_file(dir.file("ds/train.bin")), before);
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"a.txt", "ds"}));

  opt.vocab_size = 450;
  prepare_dataset(opt);
  EXPECT_EQ(ShardReader(dir.file("ds/train.bin")).vocab_size(), 450u);
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"a.txt", "ds"}));

  // A non-empty directory that is not a dataset is never replaced, even with overwrite.
  make_dirs(dir.file("mine"));
  test::write_text(dir.file("mine/notes.txt"), "keep me");
  opt.out_dir = dir.file("mine");
  msg = error_of([&] { prepare_dataset(opt); });
  EXPECT_NE(msg.find(dir.file("mine")), std::string::npos) << msg;
  EXPECT_EQ(read_file(dir.file("mine/notes.txt")), "keep me");
}

TEST(Prepare, EmptyCorpusFailsAndLeavesNoOutput) {
  TempDir dir;
  test::write_text(dir.file("blank.txt"), "\n   \n\t\n");
  std::string msg = error_of([&] { prepare_dataset(options(dir, {dir.file("blank.txt")})); });
  EXPECT_NE(msg.find(dir.file("blank.txt")), std::string::npos) << msg;
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"blank.txt"}));
}

TEST(Prepare, MissingInputFailsAndLeavesNoOutput) {
  TempDir dir;
  test::write_text(dir.file("a.txt"), test::make_corpus(50));
  std::string missing = dir.file("missing.txt");
  std::string msg = error_of([&] { prepare_dataset(options(dir, {dir.file("a.txt"), missing})); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"a.txt"}));
}

TEST(Prepare, FailureAfterStagingLeavesNoOutput) {
  TempDir dir;
  test::write_text(dir.file("one.txt"), "only one line of text here\n");
  auto opt = options(dir, {dir.file("one.txt")});
  opt.vocab_size = 300;
  // Tokenizer training or the split (one document cannot be split) must fail; either way
  // nothing may remain.
  std::string msg = error_of([&] { prepare_dataset(opt); });
  EXPECT_FALSE(msg.empty());
  EXPECT_EQ(entries(dir.path()), (std::vector<std::string>{"one.txt"}));
}

}  // namespace
}  // namespace tandem
