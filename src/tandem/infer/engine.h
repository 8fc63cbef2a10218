// Inference on a backend: a model's weights prepared for serving (fp32, int8 or q4), and a
// batch engine that runs one forward over new tokens of many sequences at once, each with its
// own KV cache slot. Continuous batching, generation, perplexity and parity checks sit on it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tandem/backend/backend.h"
#include "tandem/data/tokenizer.h"
#include "tandem/model/config.h"
#include "tandem/model/params.h"
#include "tandem/ckpt/config.h"

namespace tandem {

// A checkpoint read for inference: config, fp32 weights (host) and tokenizer. `path` may be a
// checkpoint directory or a run directory (its newest checkpoint that verifies).
struct ModelFiles {
  RunConfig config;
  std::vector<float> params;  // ParamLayout(config.model) order
  std::unique_ptr<Tokenizer> tokenizer;
  int64_t step = 0;
  std::string dir;  // the checkpoint directory actually read
};
ModelFiles load_model_files(const std::string& path);
// The run's name: "runs/tiny" and "runs/tiny/step-00001500" both give "tiny".
std::string run_name(const ModelFiles& mf);

// The weights on a backend in inference form. Norms and the embedding table stay fp32; the
// matmul weights (and the output projection) take the requested type.
class InferModel {
 public:
  InferModel(const ModelConfig& cfg, const float* host_params, Backend& be, WType type);
  ~InferModel();
  InferModel(const InferModel&) = delete;
  InferModel& operator=(const InferModel&) = delete;

  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }
  WType type() const { return type_; }
  size_t weight_bytes() const { return weight_bytes_; }  // bytes of matmul weights as stored

  struct Layer {
    const float *ln1, *ln2;
    WMatrix wqkv, wo, wgateup, wdown;
  };
  const float* embed() const { return embed_; }
  const float* final_norm() const { return final_norm_; }
  const WMatrix& lm_head() const { return lm_head_; }
  const std::vector<Layer>& layers() const { return layers_; }

 private:
  WMatrix upload(const float* host, int N, int K);
  ModelConfig cfg_;
  Backend& be_;
  WType type_;
  size_t weight_bytes_ = 0;
  std::vector<void*> owned_;
  const float *embed_ = nullptr, *final_norm_ = nullptr;
  WMatrix lm_head_;
  std::vector<Layer> layers_;
};

struct EngineOptions {
  int slots = 1;            // sequences with a KV cache
  int max_seq = 0;          // tokens per sequence (0 = the model context)
  int max_step_tokens = 0;  // new tokens per step over all sequences (0 = max_seq)
  int max_logit_rows = 0;   // logit rows per step (0 = slots); all_logits items count n rows
};

class BatchEngine {
 public:
  BatchEngine(InferModel& model, const EngineOptions& opt);
  ~BatchEngine();
  BatchEngine(const BatchEngine&) = delete;
  BatchEngine& operator=(const BatchEngine&) = delete;

  // New tokens for one sequence, appended at its slot's current position.
  struct Item {
    int slot = 0;
    const int32_t* tokens = nullptr;
    int n = 0;
    bool all_logits = false;  // logits for every new token, not just the last
  };
  // One forward over all items (each slot at most once). Returns host logits: for each item
  // in order, n rows (all_logits) or 1 row of vocab_size floats. Valid until the next step.
  // Throws "[engine] ..." when a sequence would pass max_seq or a limit is exceeded; nothing
  // changes then.
  const float* step(std::span<const Item> items);

  int position(int slot) const { return pos_.at(slot); }
  void reset(int slot) { pos_.at(slot) = 0; }
  const EngineOptions& options() const { return opt_; }
  InferModel& model() { return model_; }

 private:
  InferModel& model_;
  Backend& be_;
  EngineOptions opt_;
  std::vector<int> pos_;
  float* buf_ = nullptr;
  float *x_, *ln_, *qkv_, *att_, *h_, *gateup_, *act_, *rstd_, *logits_, *kv_;
  void* scratch_ = nullptr;
  int32_t* tokens_dev_ = nullptr;
  std::vector<int32_t> tokens_host_;
  std::vector<float> logits_host_;
};

}  // namespace tandem
