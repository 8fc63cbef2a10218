// tandem logits --checkpoint DIR --prompt TEXT --out FILE: the model's logits at every prompt
// position, as safetensors ("tokens" I32 [T], "logits" F32 [T, V]), for comparing with other
// runtimes (the Hugging Face export test uses it).
#include <cstdio>
#include <sstream>

#include "tandem/cli/commands.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/infer/engine.h"
#include "tandem/infer/quant.h"
#include "tandem/io/safetensors.h"

namespace tandem::cli {

void add_logits(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("logits", "write the logits of every prompt position to a safetensors file");
  struct Args {
    std::string checkpoint, prompt, tokens, out, backend = "cpu", quant = "none";
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint,-c", a->checkpoint, "checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--prompt,-p", a->prompt, "prompt text (a beginning-of-sequence token is prepended)");
  cmd->add_option("--tokens", a->tokens, "comma-separated token ids instead of a prompt");
  cmd->add_option("--out,-o", a->out, "output .safetensors file")->required();
  cmd->add_option("--backend", a->backend, "backend to run on")->capture_default_str();
  cmd->add_option("--quant", a->quant, "weights: none (fp32), int8 or q4")->capture_default_str();
  cmd->add_option("--threads", a->threads, "threads (0 = all cores)");
  cmd->callback([&action, a] {
    action = [a] {
      if (a->prompt.empty() == a->tokens.empty())
        fail("[logits] give exactly one of --prompt and --tokens");
      const WType wt = parse_quant(a->quant);
      ModelFiles mf = load_model_files(a->checkpoint);
      const ModelConfig& c = mf.config.model;
      std::vector<int32_t> ids;
      if (!a->prompt.empty()) {
        ids.push_back(mf.tokenizer->bos_id());
        for (int32_t t : mf.tokenizer->encode(a->prompt)) ids.push_back(t);
      } else {
        std::stringstream ss(a->tokens);
        for (std::string item; std::getline(ss, item, ',');) {
          try {
            size_t used = 0;
            const long v = std::stol(item, &used);
            if (used != item.size() || v < 0 || v >= c.vocab_size) throw std::out_of_range("");
            ids.push_back((int32_t)v);
          } catch (const std::logic_error&) {
            fail("[logits] --tokens: '" + item + "' is not a token id below " + std::to_string(c.vocab_size));
          }
        }
      }
      if (ids.empty() || (int)ids.size() > c.context)
        fail("[logits] the sequence has " + std::to_string(ids.size()) + " tokens; 1 to " +
             std::to_string(c.context) + " are allowed");
      auto be = make_backend(a->backend, a->threads);
      InferModel im(c, mf.params.data(), *be, wt);
      const int T = (int)ids.size();
      BatchEngine eng(im, EngineOptions{1, c.context, T, T});
      BatchEngine::Item it{0, ids.data(), T, true};
      const float* lg = eng.step({&it, 1});
      StFile st;
      StTensor tt;
      tt.name = "tokens";
      tt.dtype = "I32";
      tt.shape = {T};
      tt.data.assign(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t));
      st.tensors.push_back(tt);
      st.tensors.push_back(st_f32("logits", {T, c.vocab_size}, lg));
      atomic_write_file(a->out, safetensors_serialize(st));
      std::fprintf(stderr, "[logits] %d positions x %d -> %s\n", T, c.vocab_size, a->out.c_str());
    };
  });
}

}  // namespace tandem::cli
