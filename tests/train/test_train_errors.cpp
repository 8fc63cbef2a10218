// Expected failures before training starts: strict config parsing, a tokenizer that does not
// match model.vocab_size, and damaged shards. Each must be one Error naming the thing at fault.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "tandem/train/trainer.h"
#include "train_test_util.h"

namespace tandem {
namespace {

using test::error_of;
using test::TempDir;
using test::TinyRun;

const char* kSource = "configs/broken.toml";

// A valid config with `from` replaced by `to` (which must be present exactly once).
std::string edit(const std::string& from, const std::string& to) {
  TinyRun r;
  r.data_dir = "data/x";
  r.out_dir = "runs/x";
  std::string text = test::tiny_config_text(r);
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at == std::string::npos) return text;
  EXPECT_EQ(text.find(from, at + 1), std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

std::string config_error(const std::string& text) {
  return error_of([&] { parse_run_config(text, kSource); });
}

void expect_mentions(const std::string& msg, std::initializer_list<const char*> parts) {
  for (const char* p : parts)
    EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

TEST(RunConfig, TinyConfigParses) {
  TinyRun r;
  r.data_dir = "data/x";
  r.out_dir = "runs/x";
  r.grad_accum = 2;
  RunConfig c = parse_run_config(test::tiny_config_text(r), kSource);
  EXPECT_EQ(c.source, kSource);
  EXPECT_EQ(c.model.dim, 48);
  EXPECT_EQ(c.model.n_kv_heads, 2);
  EXPECT_EQ(c.model.vocab_size, test::kVocab);
  EXPECT_EQ(c.data_dir, "data/x");
  EXPECT_EQ(c.out_dir, "runs/x");
  EXPECT_EQ(c.train.grad_accum, 2);
  EXPECT_EQ(c.train.threads, 2);
  EXPECT_FLOAT_EQ(c.train.lr, 3e-3f);
  EXPECT_EQ(c.text, test::tiny_config_text(r));
}

TEST(RunConfig, UnknownKeyIsNamed) {
  std::string msg = config_error(edit("\nlr = ", "\nlrr = 0.1\nlr = "));
  expect_mentions(msg, {kSource, "train.lrr"});
}

TEST(RunConfig, MissingRequiredKeyIsNamed) {
  std::string msg = config_error(edit("dim = 48\n", ""));
  expect_mentions(msg, {kSource, "model.dim", "missing"});
}

TEST(RunConfig, WrongTypeIsNamed) {
  std::string msg = config_error(edit("lr = 0.003", "lr = \"fast\""));
  expect_mentions(msg, {kSource, "train.lr", "number"});
  msg = config_error(edit("batch_size = 4", "batch_size = 4.5"));
  expect_mentions(msg, {kSource, "train.batch_size", "integer"});
  msg = config_error(edit("tie_embeddings = true", "tie_embeddings = 1"));
  expect_mentions(msg, {kSource, "model.tie_embeddings"});
}

TEST(RunConfig, UnknownTableIsNamed) {
  std::string msg = config_error(edit("[run]", "[optimizer]\nkind = \"adamw\"\n\n[run]"));
  expect_mentions(msg, {kSource, "optimizer"});
}

TEST(RunConfig, SeqLenLongerThanContext) {
  std::string msg = config_error(edit("seq_len = 32", "seq_len = 64"));
  expect_mentions(msg, {kSource, "train.seq_len", "context"});
}

TEST(RunConfig, OutOfRangeValues) {
  expect_mentions(config_error(edit("max_steps = 12", "max_steps = 0")),
                  {kSource, "train.max_steps"});
  expect_mentions(config_error(edit("grad_accum = 1", "grad_accum = -1")),
                  {kSource, "train.grad_accum"});
  expect_mentions(config_error(edit("lr = 0.003", "lr = -0.1")), {kSource, "train.lr"});
}

TEST(RunConfig, InvalidTomlSyntaxNamesFileAndLine) {
  std::string msg = config_error(edit("batch_size = 4", "batch_size = = 4"));
  // "configs/broken.toml:LINE:COL: ..." where LINE is the edited line.
  TinyRun r;
  r.data_dir = "data/x";
  r.out_dir = "runs/x";
  std::string text = test::tiny_config_text(r);
  const int line = 1 + (int)std::count(text.begin(), text.begin() + text.find("batch_size"), '\n');
  expect_mentions(msg, {kSource});
  EXPECT_NE(msg.find(std::string(kSource) + ":" + std::to_string(line) + ":"), std::string::npos)
      << msg;
}

TEST(RunConfig, NonexistentPathIsNamed) {
  TempDir dir;
  const std::string path = dir.file("no-such-config.toml");
  std::string msg = error_of([&] { load_run_config(path); });
  expect_mentions(msg, {path.c_str(), "does not exist"});
}

TEST(RunConfig, LoadsFromFileWithItsPathAsSource) {
  TempDir dir;
  const std::string path = dir.file("bad.toml");
  test::write_text(path, edit("\nlr = ", "\nlrr = 0.1\nlr = "));
  std::string msg = error_of([&] { load_run_config(path); });
  expect_mentions(msg, {path.c_str(), "train.lrr"});
}

class DataErrors : public ::testing::Test {
 protected:
  void SetUp() override { data_ = test::prepare_tiny_dataset(dir_, 200); }
  RunConfig config(int vocab = test::kVocab) {
    TinyRun r;
    r.data_dir = data_;
    r.out_dir = dir_.file("run");
    r.vocab_size = vocab;
    r.max_steps = 1;
    return test::tiny_config(r);
  }
  std::string train_error(const RunConfig& c) {
    TrainOptions o;
    o.progress = false;
    return error_of([&] { run_training(c, o); });
  }
  TempDir dir_;
  std::string data_;
};

TEST_F(DataErrors, VocabMismatchNamesTokenizerAndBothSizes) {
  std::string msg = train_error(config(512));
  expect_mentions(msg, {"tokenizer.model", "384", "512", "vocab_size"});
  EXPECT_FALSE(std::filesystem::exists(dir_.file("run"))) << "a failed start left a run dir";
}

TEST_F(DataErrors, TruncatedShardIsNamed) {
  const std::string shard = data_ + "/train.bin";
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) - 7);
  std::string msg = train_error(config());
  expect_mentions(msg, {"train.bin"});
  EXPECT_FALSE(std::filesystem::exists(dir_.file("run")));
}

TEST_F(DataErrors, CorruptShardPayloadIsNamed) {
  const std::string shard = data_ + "/val.bin";
  test::flip_byte(shard, 64 + 10, 0x01);  // a token's low byte, after the 64-byte header
  std::string msg = train_error(config());
  expect_mentions(msg, {"val.bin", "checksum"});
}

TEST_F(DataErrors, MissingDataDirIsNamed) {
  RunConfig c = config();
  c.data_dir = dir_.file("nowhere");
  std::string msg = train_error(c);
  expect_mentions(msg, {"nowhere", "data prepare"});
}

}  // namespace
}  // namespace tandem
