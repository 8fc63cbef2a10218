// Loading a trained model for inference: checkpoint directory -> config, weights on a backend,
// and the tokenizer saved beside them.
#pragma once

#include <memory>
#include <string>

#include "tandem/backend/backend.h"
#include "tandem/data/tokenizer.h"
#include "tandem/model/llama.h"
#include "tandem/train/config.h"

namespace tandem {

struct LoadedModel {
  RunConfig config;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Llama> model;
  std::unique_ptr<Tokenizer> tokenizer;
  int64_t step = 0;
};

// Verifies the checkpoint's checksums; the tokenizer must match the model's vocabulary.
LoadedModel load_for_inference(const std::string& checkpoint_dir, const std::string& backend,
                               int threads);

}  // namespace tandem
