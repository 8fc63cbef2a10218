// tandem info CONFIG.toml: parameter count and FLOPs per token of a config, and the hardware
// and kernels (CPU model, vector ISA, GEMM provider and core) its backend would use here.
#include <cstdio>

#include "tandem/backend/backend.h"
#include "tandem/cli/commands.h"
#include "tandem/core/error.h"
#include "tandem/ckpt/config.h"

namespace tandem::cli {

void add_info(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("info", "print a config's parameter count and FLOPs per token");
  auto path = std::make_shared<std::string>();
  cmd->add_option("config", *path, "run config (TOML)")->required();
  cmd->callback([&action, path] {
    action = [path] {
      const RunConfig cfg = load_run_config(*path);
      std::printf("%s\n", cfg.model.summary().c_str());
      // The hardware and kernels a run of this config would use here.
      try {
        std::printf("backend: %s\n", make_backend(cfg.train.backend, cfg.train.threads)->describe().c_str());
      } catch (const Error& e) {
        std::printf("backend: %s is not available here (%s)\n", cfg.train.backend.c_str(), e.what());
      }
    };
  });
}

}  // namespace tandem::cli
