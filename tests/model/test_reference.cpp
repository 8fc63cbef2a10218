// The C++ model against the independent PyTorch reference (tests/reference/compare.py): logits,
// loss and every parameter gradient of one step must agree to 1e-4 relative error.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "model_test_util.h"
#include "tandem/core/fs.h"
#include "tandem/io/safetensors.h"

namespace tandem::test {
namespace {

const std::string kPython = "/usr/bin/python3";
const std::string kCompare = std::string(TANDEM_SOURCE_DIR) + "/tests/reference/compare.py";

bool reference_available() {
  static const bool ok =
      std::system((kPython + " -c 'import numpy, torch' >/dev/null 2>&1").c_str()) == 0;
  return ok;
}

// A fresh directory under the system temp dir, removed when the test passes.
class DumpDir {
 public:
  explicit DumpDir(const std::string& tag) {
    auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "." + info->name() + "." + tag;
    for (char& c : name)
      if (c == '/') c = '_';
    path_ = (std::filesystem::temp_directory_path() /
             ("tandem_ref_" + std::to_string(getpid()) + "_" + name))
                .string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~DumpDir() {
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(path_);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& f) const { return path_ + "/" + f; }

 private:
  std::string path_;
};

StTensor st_i32(const std::string& name, std::vector<int64_t> shape,
                const std::vector<int32_t>& v) {
  StTensor t;
  t.name = name;
  t.dtype = "I32";
  t.shape = std::move(shape);
  t.data.assign(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int32_t));
  return t;
}

// config.json, model.safetensors and outputs.safetensors for compare.py.
void write_dump(const DumpDir& dir, Llama& m, const Batch& b, const StepResult& r) {
  const ModelConfig& c = m.config();
  nlohmann::json cfg = {{"dim", c.dim},
                        {"n_layers", c.n_layers},
                        {"n_heads", c.n_heads},
                        {"n_kv_heads", c.n_kv_heads},
                        {"hidden_dim", c.hidden_dim},
                        {"vocab_size", c.vocab_size},
                        {"context", c.context},
                        {"tie_embeddings", c.tie_embeddings},
                        {"rope_theta", c.rope_theta},
                        {"norm_eps", c.norm_eps}};
  atomic_write_file(dir.file("config.json"), cfg.dump(2));

  std::vector<float> params(m.num_params());
  m.save_params(params.data());
  StFile weights, outputs;
  for (const auto& t : m.layout().tensors)
    weights.tensors.push_back(st_f32(t.name, t.shape, params.data() + t.offset));
  atomic_write_file(dir.file("model.safetensors"), safetensors_serialize(weights));

  outputs.tensors.push_back(st_i32("tokens", {b.B, b.T}, b.tokens));
  outputs.tensors.push_back(st_i32("targets", {b.B, b.T}, b.targets));
  outputs.tensors.push_back(st_f32("logits", {b.B, b.T, c.vocab_size}, r.logits.data()));
  const float loss = (float)r.loss;
  outputs.tensors.push_back(st_f32("loss", {1}, &loss));
  for (const auto& t : m.layout().tensors)
    outputs.tensors.push_back(st_f32("grad." + t.name, t.shape, r.grads.data() + t.offset));
  atomic_write_file(dir.file("outputs.safetensors"), safetensors_serialize(outputs));
}

// Runs compare.py on the dump; returns its exit status and fills `out` with what it printed.
int run_compare(const DumpDir& dir, std::string* out) {
  const std::string log = dir.file("compare.log");
  const std::string cmd = kPython + " " + kCompare + " " + dir.path() + " >" + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  *out = read_file(log);
  if (status == -1 || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// Builds the model of `c`, runs one step and dumps it.
void make_dump(const DumpDir& dir, const ModelConfig& c, uint64_t seed) {
  auto be = make_backend("cpu", 2);
  Llama m(c, *be);
  init_test_weights(m, seed);
  Batch b = make_batch(c, seed + 1);
  StepResult r = run_step(m, b);
  write_dump(dir, m, b, r);
}

class ReferenceTest : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    // A missing reference is a failure, not a skip: scripts/setup.sh installs it.
    ASSERT_TRUE(reference_available())
        << kPython << " cannot import torch and numpy (install Debian's python3-torch)";
  }
};

TEST_P(ReferenceTest, MatchesPyTorch) {
  const ModelCase& mc = GetParam();
  DumpDir dir(mc.name);
  make_dump(dir, mc.cfg, 1234);
  std::string out;
  const int rc = run_compare(dir, &out);
  std::cout << out;
  EXPECT_EQ(rc, 0) << "compare.py reported mismatches for " << mc.name << " (dump kept in "
                   << dir.path() << "):\n"
                   << out;
}

INSTANTIATE_TEST_SUITE_P(Model, ReferenceTest, ::testing::ValuesIn(model_cases()),
                         [](const auto& info) { return info.param.name; });

class ReferenceDetects : public ReferenceTest {};

// Rewrites one tensor of a safetensors file in the dump.
void edit_tensor(const DumpDir& dir, const std::string& file, const std::string& name,
                 void (*edit)(float* v, size_t n)) {
  StFile f = safetensors_load(dir.file(file));
  bool found = false;
  for (auto& t : f.tensors) {
    if (t.name != name) continue;
    ASSERT_EQ(t.dtype, "F32");
    edit(reinterpret_cast<float*>(t.data.data()), t.data.size() / sizeof(float));
    found = true;
  }
  ASSERT_TRUE(found) << name << " not in " << file;
  atomic_write_file(dir.file(file), safetensors_serialize(f));
}

// A small change to one weight (1% of one norm weight element) must show up as a mismatch:
// the reference then computes different logits, loss and gradients than the dump holds.
TEST_P(ReferenceDetects, PerturbedWeight) {
  DumpDir dir("weight");
  make_dump(dir, GetParam().cfg, 99);
  edit_tensor(dir, "model.safetensors", "model.layers.1.input_layernorm.weight",
              [](float* v, size_t) { v[5] *= 1.01f; });
  std::string out;
  EXPECT_EQ(run_compare(dir, &out), 1) << out;
  EXPECT_NE(out.find("FAILED"), std::string::npos) << out;
  EXPECT_NE(out.find("FAIL logits"), std::string::npos) << out;
}

// A gradient with its sign flipped must be named as the failure, and nothing else fails.
TEST_P(ReferenceDetects, FlippedGradient) {
  DumpDir dir("grad");
  make_dump(dir, GetParam().cfg, 99);
  const std::string name = "grad.model.layers.0.self_attn.k_proj.weight";
  edit_tensor(dir, "outputs.safetensors", name, [](float* v, size_t n) {
    for (size_t i = 0; i < n; ++i) v[i] = -v[i];
  });
  std::string out;
  EXPECT_EQ(run_compare(dir, &out), 1) << out;
  EXPECT_NE(out.find("[compare] FAILED: " + name + "\n"), std::string::npos) << out;
}

INSTANTIATE_TEST_SUITE_P(Model, ReferenceDetects, ::testing::Values(model_cases()[0]),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace tandem::test
