// load_for_inference: weights only; the optimizer state is not read.
#include "tandem/infer/load.h"

#include <cstdio>
#include <filesystem>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/train/checkpoint.h"

namespace tandem {

LoadedModel load_for_inference(const std::string& dir, const std::string& backend, int threads) {
  if (!path_exists(dir)) fail("[checkpoint] '" + dir + "' does not exist");
  if (!path_exists(dir + "/manifest.json") && std::filesystem::is_directory(dir)) {
    // A run directory: use its newest checkpoint that verifies.
    std::vector<std::string> rejected;
    auto latest = latest_checkpoint(dir, &rejected);
    for (const auto& r : rejected) std::fprintf(stderr, "[checkpoint] skipping: %s\n", r.c_str());
    if (!latest) fail("[checkpoint] '" + dir + "' holds no checkpoint that verifies");
    return load_for_inference(*latest, backend, threads);
  }
  nlohmann::json man = read_manifest(dir);
  LoadedModel lm;
  lm.config = parse_run_config(man["config"].get<std::string>(), dir + "/manifest.json");
  lm.step = man["step"].get<int64_t>();
  if (!man["files"].contains("tokenizer.model"))
    fail("[checkpoint] " + dir + ": has no tokenizer.model");
  lm.tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(dir + "/tokenizer.model"));
  if (lm.tokenizer->vocab_size() != lm.config.model.vocab_size)
    fail("[checkpoint] " + dir + "/tokenizer.model has a vocabulary of " +
         std::to_string(lm.tokenizer->vocab_size()) + " but the model expects " +
         std::to_string(lm.config.model.vocab_size));
  lm.backend = make_backend(backend, threads);
  lm.model = std::make_unique<Llama>(lm.config.model, *lm.backend);
  CheckpointData ck = load_checkpoint(dir, lm.model->layout(), false);
  lm.model->load_params(ck.params.data());
  return lm;
}

}  // namespace tandem
