// End-to-end tests of the real `tandem` binary: failures exit non-zero with one message that
// names the culprit and leave no output behind; data prepare -> train -> generate works.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "../train/train_test_util.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

struct Result {
  int code = -1;
  std::string out, err;
  int err_lines() const { return (int)std::count(err.begin(), err.end(), '\n'); }
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `tandem ARGS...` inside `dir`, capturing stdout, stderr and the exit status.
Result tandem(const TempDir& dir, const std::vector<std::string>& args) {
  // Appends piece by piece: GCC 12 warns (-Wrestrict, falsely) on "literal" + std::string&&.
  std::string cmd = "cd ";
  cmd += quote(dir.path().string());
  cmd += " && ";
  cmd += quote(TANDEM_BIN);
  for (const auto& a : args) {
    cmd += ' ';
    cmd += quote(a);
  }
  const std::string out = dir.file(".stdout"), err = dir.file(".stderr");
  cmd += " > ";
  cmd += quote(out);
  cmd += " 2> ";
  cmd += quote(err);
  const int status = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = test::read_bytes(out);
  r.err = test::read_bytes(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Prepares dir/ds and writes dir/tiny.toml (6 steps, one final checkpoint) through the CLI.
void prepare_and_configure(const TempDir& dir, int64_t steps = 6) {
  test::write_text(dir.file("corpus.txt"), test::make_corpus(300));
  Result r = tandem(dir, {"data", "prepare", "-i", "corpus.txt", "-o", "ds", "--vocab-size",
                          std::to_string(test::kVocab)});
  ASSERT_EQ(r.code, 0) << r.err;
  test::TinyRun t;
  t.data_dir = "ds";
  t.out_dir = "run";
  t.max_steps = steps;
  t.checkpoint_every = 0;
  t.eval_every = 0;
  test::write_text(dir.file("tiny.toml"), test::tiny_config_text(t));
}

// A trained tiny checkpoint: dir/run/step-00000006.
std::string trained_checkpoint(const TempDir& dir) {
  prepare_and_configure(dir);
  Result r = tandem(dir, {"train", "tiny.toml"});
  EXPECT_EQ(r.code, 0) << r.err;
  return dir.file("run/step-00000006");
}

TEST(Cli, TrainMissingConfig) {
  TempDir dir;
  Result r = tandem(dir, {"train", "missing.toml"});
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_TRUE(has(r.err, "missing.toml")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(Cli, TrainUnknownKey) {
  TempDir dir;
  test::TinyRun t;
  t.data_dir = "ds";
  t.out_dir = "run";
  std::string text = test::tiny_config_text(t);
  text.replace(text.find("\nlr = "), 6, "\nlrr = 0.1\nlr = ");
  test::write_text(dir.file("bad.toml"), text);
  Result r = tandem(dir, {"train", "bad.toml"});
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_TRUE(has(r.err, "train.lrr")) << r.err;
  EXPECT_TRUE(has(r.err, "bad.toml")) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("run")));
}

TEST(Cli, DataPrepareEmptyCorpus) {
  TempDir dir;
  test::write_text(dir.file("empty.txt"), "");
  Result r =
      tandem(dir, {"data", "prepare", "-i", "empty.txt", "-o", "out/ds", "--vocab-size", "384"});
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_TRUE(has(r.err, "empty.txt")) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("out/ds")));
  if (fs::exists(dir.file("out"))) {  // no staging directory left beside it
    EXPECT_TRUE(fs::is_empty(dir.file("out")));
  }
}

TEST(Cli, GenerateNonexistentCheckpoint) {
  TempDir dir;
  Result r = tandem(dir, {"generate", "--checkpoint", "nowhere/step-00000001", "--prompt", "The"});
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_TRUE(has(r.err, "nowhere/step-00000001")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(Cli, GeneratePromptLongerThanContext) {
  TempDir dir;
  const std::string ck = trained_checkpoint(dir);
  std::string prompt;
  for (int i = 0; i < 20; ++i) prompt += "The king went up to the house. ";
  Result r = tandem(dir, {"generate", "-c", ck, "-p", prompt, "-n", "5", "--threads", "2"});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(has(r.err, "prompt")) << r.err;
  EXPECT_TRUE(has(r.err, "longer than the model context")) << r.err;
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_TRUE(r.out.empty()) << "generated despite the error: " << r.out;
}

TEST(Cli, GenerateCorruptCheckpoint) {
  TempDir dir;
  const std::string ck = trained_checkpoint(dir);
  test::flip_byte(ck + "/model.safetensors");
  Result r = tandem(dir, {"generate", "-c", ck, "-p", "The king", "-n", "5", "--threads", "2"});
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_TRUE(has(r.err, "checksum")) << r.err;
  EXPECT_TRUE(has(r.err, "model.safetensors")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(Cli, PrepareTrainGenerate) {
  TempDir dir;
  const std::string ck = trained_checkpoint(dir);
  ASSERT_TRUE(fs::exists(ck + "/manifest.json"));
  const std::vector<std::string> common = {"generate", "-c", ck,          "-p", "The king",
                                           "-n",       "20", "--threads", "2"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), extra.begin(), extra.end());
    return tandem(dir, a);
  };
  Result g1 = with({"--greedy"}), g2 = with({"--greedy"});
  ASSERT_EQ(g1.code, 0) << g1.err;
  EXPECT_EQ(g1.out.rfind("The king", 0), 0u) << g1.out;
  EXPECT_GT(g1.out.size(), std::string("The king\n").size()) << "nothing generated: " << g1.out;
  EXPECT_EQ(g1.out, g2.out);
  EXPECT_TRUE(has(g1.err, "[generate]")) << g1.err;

  Result s1 = with({"--seed", "7", "--temperature", "0.8"});
  Result s2 = with({"--seed", "7", "--temperature", "0.8"});
  ASSERT_EQ(s1.code, 0) << s1.err;
  ASSERT_EQ(s2.code, 0) << s2.err;
  EXPECT_EQ(s1.out.rfind("The king", 0), 0u) << s1.out;
  EXPECT_EQ(s1.out, s2.out);
}

TEST(Cli, TrainRefusesExistingRunWithoutResume) {
  TempDir dir;
  prepare_and_configure(dir, 6);
  Result r = tandem(dir, {"train", "tiny.toml", "--stop-after", "3"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir.file("run/step-00000003/manifest.json")));
  r = tandem(dir, {"train", "tiny.toml"});
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(has(r.err, "--resume")) << r.err;
  r = tandem(dir, {"train", "tiny.toml", "--resume"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(has(r.err, "resumed from")) << r.err;
  EXPECT_TRUE(fs::exists(dir.file("run/step-00000006/manifest.json")));
  EXPECT_EQ(test::metric_series(dir.file("run/metrics.jsonl"), "loss").size(), 6u);
}

}  // namespace
}  // namespace tandem
