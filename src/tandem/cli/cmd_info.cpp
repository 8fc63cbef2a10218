// tandem info CONFIG.toml: parameter count and FLOPs per token of a config.
#include <cstdio>

#include "tandem/cli/commands.h"
#include "tandem/train/config.h"

namespace tandem::cli {

void add_info(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("info", "print a config's parameter count and FLOPs per token");
  auto path = std::make_shared<std::string>();
  cmd->add_option("config", *path, "run config (TOML)")->required();
  cmd->callback([&action, path] {
    action = [path] { std::printf("%s\n", load_run_config(*path).model.summary().c_str()); };
  });
}

}  // namespace tandem::cli
