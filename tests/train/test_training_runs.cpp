// Whole training runs on a tiny model: bit-for-bit determinism, exact resume (also with
// gradient accumulation), recovery from corrupt or incomplete checkpoints, and learning.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "tandem/ckpt/checkpoint.h"
#include "tandem/train/trainer.h"
#include "train_test_util.h"

namespace tandem {
namespace {

using test::error_of;
using test::sha_of;
using test::TempDir;
using test::TinyRun;

TrainOptions quiet(bool resume = false, int64_t stop_after = -1) {
  TrainOptions o;
  o.progress = false;
  o.resume = resume;
  o.stop_after = stop_after;
  return o;
}

std::string ck(const std::string& run, int64_t step) { return run + "/" + checkpoint_name(step); }

// Asserts that two runs' final checkpoints hold the same bytes for weights and optimizer.
void expect_same_checkpoint(const std::string& a, const std::string& b) {
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    ASSERT_TRUE(std::filesystem::exists(a + "/" + f)) << a << "/" << f;
    ASSERT_TRUE(std::filesystem::exists(b + "/" + f)) << b << "/" << f;
    EXPECT_EQ(sha_of(a + "/" + f), sha_of(b + "/" + f)) << f << " differs: " << a << " vs " << b;
  }
}

class TrainingRuns : public test::TinyRunTest {};

TEST_F(TrainingRuns, SameConfigGivesSameBits) {
  TinyRun a = run("a"), b = run("b");
  TrainResult ra = run_training(test::tiny_config(a), quiet());
  TrainResult rb = run_training(test::tiny_config(b), quiet());
  EXPECT_EQ(ra.step, 12);
  EXPECT_EQ(rb.step, 12);
  EXPECT_EQ(ra.last_checkpoint, ck(a.out_dir, 12));
  expect_same_checkpoint(ck(a.out_dir, 12), ck(b.out_dir, 12));
  auto la = test::metric_series(a.out_dir + "/metrics.jsonl", "loss");
  auto lb = test::metric_series(b.out_dir + "/metrics.jsonl", "loss");
  ASSERT_EQ(la.size(), 12u);
  EXPECT_EQ(la, lb);  // exact doubles
  EXPECT_EQ(test::metric_series(a.out_dir + "/metrics.jsonl", "val_loss"),
            test::metric_series(b.out_dir + "/metrics.jsonl", "val_loss"));
  EXPECT_EQ(ra.last_loss, rb.last_loss);
}

TEST_F(TrainingRuns, DifferentSeedGivesDifferentWeights) {
  TinyRun a = run("a"), b = run("b");
  a.max_steps = b.max_steps = 4;
  b.seed = a.seed + 1;
  run_training(test::tiny_config(a), quiet());
  run_training(test::tiny_config(b), quiet());
  EXPECT_NE(sha_of(ck(a.out_dir, 4) + "/model.safetensors"),
            sha_of(ck(b.out_dir, 4) + "/model.safetensors"));
  EXPECT_NE(test::metric_series(a.out_dir + "/metrics.jsonl", "loss"),
            test::metric_series(b.out_dir + "/metrics.jsonl", "loss"));
}

class ResumeExactness : public TrainingRuns, public ::testing::WithParamInterface<int> {};

// Run A goes straight to step 12; run B stops after 6 and is resumed to 12. Same bits.
TEST_P(ResumeExactness, StopAndResumeMatchesUninterruptedRun) {
  TinyRun a = run("a"), b = run("b");
  a.grad_accum = b.grad_accum = GetParam();
  run_training(test::tiny_config(a), quiet());

  TrainResult first = run_training(test::tiny_config(b), quiet(false, 6));
  EXPECT_EQ(first.step, 6);
  EXPECT_EQ(first.last_checkpoint, ck(b.out_dir, 6));
  EXPECT_TRUE(std::filesystem::exists(ck(b.out_dir, 4)));
  EXPECT_FALSE(std::filesystem::exists(ck(b.out_dir, 8)));
  // Step 4 was saved by both runs on the way: identical already.
  expect_same_checkpoint(ck(a.out_dir, 4), ck(b.out_dir, 4));

  TrainResult second = run_training(test::tiny_config(b), quiet(true));
  EXPECT_EQ(second.step, 12);
  expect_same_checkpoint(ck(a.out_dir, 8), ck(b.out_dir, 8));
  expect_same_checkpoint(ck(a.out_dir, 12), ck(b.out_dir, 12));

  auto la = test::metric_series(a.out_dir + "/metrics.jsonl", "loss");
  auto lb = test::metric_series(b.out_dir + "/metrics.jsonl", "loss");
  ASSERT_EQ(lb.size(), 12u);
  for (size_t i = 0; i < lb.size(); ++i) EXPECT_EQ(lb[i].first, (int64_t)i + 1);  // no repeats
  EXPECT_EQ(la, lb);
  EXPECT_EQ(test::metric_series(a.out_dir + "/metrics.jsonl", "val_loss"),
            test::metric_series(b.out_dir + "/metrics.jsonl", "val_loss"));
}

INSTANTIATE_TEST_SUITE_P(GradAccum, ResumeExactness, ::testing::Values(1, 2),
                         [](const auto& info) { return "accum" + std::to_string(info.param); });

TEST_F(TrainingRuns, ResumingAFinishedRunChangesNothing) {
  TinyRun a = run("a");
  a.max_steps = 4;
  run_training(test::tiny_config(a), quiet());
  const std::string before = sha_of(ck(a.out_dir, 4) + "/model.safetensors");
  TrainResult r = run_training(test::tiny_config(a), quiet(true));
  EXPECT_EQ(r.step, 4);
  EXPECT_EQ(sha_of(ck(a.out_dir, 4) + "/model.safetensors"), before);
  EXPECT_EQ(test::metric_series(a.out_dir + "/metrics.jsonl", "loss").size(), 4u);
}

// Resuming a run that has no steps left must not rewrite its last checkpoint (an earlier
// version did, moving the valid original aside as step-N.rejected-TIME).
TEST_F(TrainingRuns, ResumingAFinishedRunLeavesNoRejectedCopy) {
  TinyRun a = run("a");
  a.max_steps = 4;
  run_training(test::tiny_config(a), quiet());
  TrainResult r = run_training(test::tiny_config(a), quiet(true));
  EXPECT_EQ(r.last_checkpoint, ck(a.out_dir, 4));
  for (const auto& e : std::filesystem::directory_iterator(a.out_dir))
    EXPECT_EQ(e.path().filename().string().find(".rejected-"), std::string::npos) << e.path();
}

TEST_F(TrainingRuns, CorruptNewestCheckpointFallsBackAndResumesExactly) {
  TinyRun a = run("a"), ref = run("ref");
  run_training(test::tiny_config(ref), quiet());
  run_training(test::tiny_config(a), quiet());
  const std::string reference = sha_of(ck(ref.out_dir, 12) + "/model.safetensors");

  test::flip_byte(ck(a.out_dir, 12) + "/model.safetensors");  // one byte mid-file
  std::vector<std::string> rejected;
  auto latest = latest_checkpoint(a.out_dir, &rejected);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(*latest, ck(a.out_dir, 8));
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_NE(rejected[0].find(checkpoint_name(12)), std::string::npos) << rejected[0];
  EXPECT_NE(rejected[0].find("model.safetensors"), std::string::npos) << rejected[0];
  EXPECT_NE(rejected[0].find("checksum"), std::string::npos) << rejected[0];
  EXPECT_NE(error_of([&] { read_manifest(ck(a.out_dir, 12)); }).find("checksum"),
            std::string::npos);

  // Resume continues from 8 and arrives at the uninterrupted run's bits.
  TrainResult r = run_training(test::tiny_config(a), quiet(true));
  EXPECT_EQ(r.step, 12);
  expect_same_checkpoint(ck(a.out_dir, 12), ck(ref.out_dir, 12));
  EXPECT_EQ(sha_of(ck(a.out_dir, 12) + "/model.safetensors"), reference);
  EXPECT_EQ(test::metric_series(a.out_dir + "/metrics.jsonl", "loss"),
            test::metric_series(ref.out_dir + "/metrics.jsonl", "loss"));
  rejected.clear();
  EXPECT_EQ(latest_checkpoint(a.out_dir, &rejected), ck(a.out_dir, 12));
  EXPECT_TRUE(rejected.empty());
}

TEST_F(TrainingRuns, TruncatedAndIncompleteCheckpointsAreSkipped) {
  TinyRun a = run("a");
  run_training(test::tiny_config(a), quiet());

  // A crash mid-write leaves a temporary directory and a step dir without its manifest.
  std::filesystem::copy(ck(a.out_dir, 12), a.out_dir + "/step-00000016.tmp-123");
  std::filesystem::copy(ck(a.out_dir, 12), ck(a.out_dir, 20));
  std::filesystem::remove(ck(a.out_dir, 20) + "/manifest.json");
  std::vector<std::string> rejected;
  EXPECT_EQ(latest_checkpoint(a.out_dir, &rejected), ck(a.out_dir, 12));
  ASSERT_EQ(rejected.size(), 1u);  // the tmp dir is not even a candidate
  EXPECT_NE(rejected[0].find(checkpoint_name(20)), std::string::npos) << rejected[0];
  EXPECT_NE(rejected[0].find("manifest"), std::string::npos) << rejected[0];

  // Truncating the newest complete checkpoint's optimizer state rejects it too.
  const std::string opt = ck(a.out_dir, 12) + "/optimizer.safetensors";
  std::filesystem::resize_file(opt, std::filesystem::file_size(opt) / 2);
  rejected.clear();
  EXPECT_EQ(latest_checkpoint(a.out_dir, &rejected), ck(a.out_dir, 8));
  ASSERT_EQ(rejected.size(), 2u);
  EXPECT_NE(rejected[1].find("optimizer.safetensors"), std::string::npos) << rejected[1];

  // A manifest that names a missing file, or is not JSON, is rejected as well.
  std::filesystem::remove(ck(a.out_dir, 8) + "/tokenizer.model");
  test::write_text(ck(a.out_dir, 4) + "/manifest.json", "{ not json");
  rejected.clear();
  EXPECT_FALSE(latest_checkpoint(a.out_dir, &rejected).has_value());
  EXPECT_EQ(rejected.size(), 4u);

  // With nothing verifying, a resume starts from scratch and reproduces the run.
  TinyRun f = run("fresh");
  run_training(test::tiny_config(f), quiet());
  TrainResult r = run_training(test::tiny_config(a), quiet(true));
  EXPECT_EQ(r.step, 12);
  expect_same_checkpoint(ck(a.out_dir, 12), ck(f.out_dir, 12));
}

TEST_F(TrainingRuns, ExistingCheckpointsNeedResume) {
  TinyRun a = run("a");
  a.max_steps = 2;
  run_training(test::tiny_config(a), quiet());
  const std::string before = sha_of(ck(a.out_dir, 2) + "/model.safetensors");
  std::string msg = error_of([&] { run_training(test::tiny_config(a), quiet()); });
  EXPECT_NE(msg.find("--resume"), std::string::npos) << msg;
  EXPECT_NE(msg.find(a.out_dir), std::string::npos) << msg;
  EXPECT_EQ(sha_of(ck(a.out_dir, 2) + "/model.safetensors"), before);
}

TEST_F(TrainingRuns, KeepCheckpointsPrunesOldOnes) {
  TinyRun a = run("a");
  a.checkpoint_every = 2;
  a.keep_checkpoints = 2;
  a.max_steps = 8;
  run_training(test::tiny_config(a), quiet());
  EXPECT_FALSE(std::filesystem::exists(ck(a.out_dir, 2)));
  EXPECT_FALSE(std::filesystem::exists(ck(a.out_dir, 4)));
  EXPECT_TRUE(std::filesystem::exists(ck(a.out_dir, 6)));
  EXPECT_TRUE(std::filesystem::exists(ck(a.out_dir, 8)));
}

TEST_F(TrainingRuns, LossFalls) {
  TinyRun a = run("a");
  a.max_steps = 60;
  a.checkpoint_every = 0;
  a.eval_every = 60;
  a.lr = 1e-2;
  TrainResult r = run_training(test::tiny_config(a), quiet());
  auto loss = test::metric_series(a.out_dir + "/metrics.jsonl", "loss");
  ASSERT_EQ(loss.size(), 60u);
  double first = 0, last = 0;
  for (int i = 0; i < 3; ++i)
    first += loss[i].second / 3, last += loss[loss.size() - 1 - i].second / 3;
  // Starts near ln(V) (uniform), ends far below it.
  EXPECT_NEAR(first, std::log((double)test::kVocab), 0.5);
  EXPECT_LT(last, first - 2.0) << "first " << first << " last " << last;
  ASSERT_GT(r.last_val_loss, 0);
  EXPECT_LT(r.last_val_loss, first - 2.0);
  for (const auto& [step, l] : loss) EXPECT_TRUE(std::isfinite(l)) << step;
}

}  // namespace
}  // namespace tandem
