// tandem export --checkpoint DIR --format gguf|hf --out PATH: a checkpoint for llama.cpp or
// Hugging Face transformers.
#include <cstdio>

#include "tandem/cli/commands.h"
#include "tandem/core/error.h"
#include "tandem/infer/export.h"
#include "tandem/infer/quant.h"

namespace tandem::cli {

void add_export(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("export", "write a checkpoint as GGUF (llama.cpp) or a Hugging Face directory");
  struct Args {
    std::string checkpoint, format, out, quant = "none", name;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--checkpoint,-c", a->checkpoint, "checkpoint directory, or a run directory (its newest checkpoint)")->required();
  cmd->add_option("--format,-f", a->format, "gguf or hf")->required();
  cmd->add_option("--out,-o", a->out, "output file (gguf) or directory (hf)")->required();
  cmd->add_option("--quant", a->quant, "gguf weights: none (f32), int8 (q8_0) or q4 (q4_0)")->capture_default_str();
  cmd->add_option("--name", a->name, "model name in the GGUF metadata (default: the run's name)");
  cmd->callback([&action, a] {
    action = [a] {
      if (a->format != "gguf" && a->format != "hf")
        fail("[export] unknown format '" + a->format + "' (expected gguf or hf)");
      const WType wt = parse_quant(a->quant);
      if (a->format == "hf" && wt != WType::F32)
        fail("[export] --quant applies to gguf only; the Hugging Face export is f32");
      ModelFiles mf = load_model_files(a->checkpoint);
      if (a->format == "gguf") {
        export_gguf(mf, wt, a->name.empty() ? run_name(mf) : a->name, a->out);
      } else {
        export_hf(mf, a->out);
      }
      std::fprintf(stderr, "[export] %s (step %lld) -> %s (%s%s)\n", mf.dir.c_str(),
                   (long long)mf.step, a->out.c_str(), a->format.c_str(),
                   a->format == "gguf" ? (std::string(", ") + (wt == WType::F32 ? "f32" : wt == WType::Q8 ? "q8_0" : "q4_0")).c_str() : "");
    };
  });
}

}  // namespace tandem::cli
