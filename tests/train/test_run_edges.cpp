// Edge cases of runs and checkpoints: the effective config round-trips through TOML, malformed
// manifests are skipped rather than crashing resume, resume refuses another seed, a run
// directory that is a file, datasets without validation data, and loading by run directory.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tandem/infer/engine.h"
#include "tandem/ckpt/checkpoint.h"
#include "tandem/train/trainer.h"
#include "train_test_util.h"

namespace tandem {
namespace {

using test::error_of;
using test::TempDir;
using test::TinyRun;

TrainOptions quiet(bool resume = false) {
  TrainOptions o;
  o.progress = false;
  o.resume = resume;
  return o;
}

TEST(RunConfigToml, RoundTripsEveryShippedConfig) {
  for (const char* name : {"tiny", "small", "gpt2-124m"}) {
    RunConfig a = load_run_config(std::string(TANDEM_SOURCE_DIR) + "/configs/" + name + ".toml");
    a.train.threads = 3;  // an override must survive too
    RunConfig b = parse_run_config(run_config_toml(a), "roundtrip");
    EXPECT_EQ(run_config_toml(a), run_config_toml(b)) << name;
    EXPECT_EQ(b.train.threads, 3);
    EXPECT_EQ(b.train.lr, a.train.lr) << name;
    EXPECT_EQ(b.model.norm_eps, a.model.norm_eps) << name;
    EXPECT_EQ(b.model.rope_theta, a.model.rope_theta) << name;
    EXPECT_EQ(b.train.seed, a.train.seed) << name;
    EXPECT_EQ(b.data_dir, a.data_dir) << name;
    EXPECT_EQ(b.out_dir, a.out_dir) << name;
  }
}

class RunEdges : public test::TinyRunTest {
 protected:
  void edit_manifest(const std::string& ck, const std::function<void(nlohmann::json&)>& f) {
    auto j = nlohmann::json::parse(test::read_bytes(ck + "/manifest.json"));
    f(j);
    test::write_text(ck + "/manifest.json", j.dump());
  }
};

TEST_F(RunEdges, MalformedManifestsAreSkippedNotFatal) {
  TinyRun a = run("a");
  run_training(test::tiny_config(a), quiet());
  edit_manifest(a.out_dir + "/step-00000012",
                [](nlohmann::json& j) { j["files"] = nlohmann::json::array(); });
  edit_manifest(a.out_dir + "/step-00000008", [](nlohmann::json& j) { j.erase("rng"); });
  std::vector<std::string> rejected;
  auto latest = latest_checkpoint(a.out_dir, &rejected);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(*latest, a.out_dir + "/step-00000004");
  ASSERT_EQ(rejected.size(), 2u);
  EXPECT_NE(rejected[0].find("'files'"), std::string::npos) << rejected[0];
  EXPECT_NE(rejected[1].find("'rng'"), std::string::npos) << rejected[1];
  // Resume continues from step 4 and reaches step 12 again.
  EXPECT_EQ(run_training(test::tiny_config(a), quiet(true)).step, 12);
}

TEST_F(RunEdges, ResumeRefusesAnotherSeed) {
  TinyRun a = run("a");
  a.max_steps = 4;
  run_training(test::tiny_config(a), quiet());
  a.seed = 99;
  a.max_steps = 8;
  std::string msg = error_of([&] { run_training(test::tiny_config(a), quiet(true)); });
  EXPECT_NE(msg.find("train.seed"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(a.out_dir + "/step-00000008"));
}

TEST_F(RunEdges, RunDirectoryThatIsAFileIsAnError) {
  TinyRun a = run("a");
  test::write_text(a.out_dir, "not a directory");
  std::string msg = error_of([&] { run_training(test::tiny_config(a), quiet()); });
  EXPECT_NE(msg.find("not a directory"), std::string::npos) << msg;
  EXPECT_EQ(test::read_bytes(a.out_dir), "not a directory");
}

TEST_F(RunEdges, CheckpointStoresTheEffectiveConfig) {
  TinyRun a = run("a");
  RunConfig cfg = test::tiny_config(a);
  cfg.train.max_steps = 4;  // as --max-steps would
  run_training(cfg, quiet());
  auto man = read_manifest(a.out_dir + "/step-00000004");
  RunConfig stored = parse_run_config(man["config"].get<std::string>(), "manifest");
  EXPECT_EQ(stored.train.max_steps, 4);
}

TEST_F(RunEdges, DatasetWithoutValidationTrainsWhenEvalIsOff) {
  test::write_text(dir_.file("c2.txt"), test::make_corpus(300, 5));
  PrepareOptions o;
  o.input_files = {dir_.file("c2.txt")};
  o.out_dir = dir_.file("noval");
  o.vocab_size = test::kVocab;
  o.val_fraction = 0.0;
  o.quiet = true;
  prepare_dataset(o);
  TinyRun a = run("a");
  a.data_dir = o.out_dir;
  a.eval_every = 0;
  a.max_steps = 3;
  EXPECT_EQ(run_training(test::tiny_config(a), quiet()).step, 3);
  TinyRun b = run("b");
  b.data_dir = o.out_dir;
  std::string msg = error_of([&] { run_training(test::tiny_config(b), quiet()); });
  EXPECT_NE(msg.find("val.bin"), std::string::npos) << msg;
}

TEST_F(RunEdges, InferenceLoadsTheNewestVerifyingCheckpointOfARunDirectory) {
  TinyRun a = run("a");
  run_training(test::tiny_config(a), quiet());
  test::flip_byte(a.out_dir + "/step-00000012/model.safetensors");
  ModelFiles mf = load_model_files(a.out_dir);
  EXPECT_EQ(mf.step, 8);
  EXPECT_EQ(mf.dir, a.out_dir + "/step-00000008");
}

}  // namespace
}  // namespace tandem
