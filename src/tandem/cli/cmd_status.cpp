// tandem status RUN_DIR [--json]: steps, restarts, rollbacks, skipped batches, the last good
// checkpoint and goodput of a run.
#include <cstdio>
#include <string>

#include "tandem/cli/commands.h"
#include "tandem/train/status.h"

namespace tandem::cli {

void add_status(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("status", "summarize a run directory: progress, faults, goodput");
  auto dir = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("run_dir", *dir, "run directory (run.out_dir)")->required();
  cmd->add_flag("--json", *json, "print one JSON object");
  cmd->callback([&action, dir, json] {
    action = [dir, json] {
      RunStatus s = read_run_status(*dir);
      std::fputs(*json ? (s.to_json().dump(2) + "\n").c_str() : s.to_text().c_str(), stdout);
    };
  });
}

}  // namespace tandem::cli
