// tandem dashboard RUN_DIR... [--host H] [--port P] [--api-key K]: follow runs in a browser.
#include <csignal>
#include <cstdio>

#include "tandem/cli/commands.h"
#include "tandem/dashboard/server.h"

namespace tandem::cli {
namespace {
DashboardServer* g_dash = nullptr;
void on_stop(int) {
  if (g_dash) g_dash->stop();
}
}  // namespace

void add_dashboard(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("dashboard", "follow training runs live in a web page");
  auto o = std::make_shared<DashboardOptions>();
  cmd->add_option("runs", o->runs, "run directories")->required();
  cmd->add_option("--host", o->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "port (0 = any free port)")->capture_default_str();
  cmd->add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' for the data");
  cmd->callback([&action, o] {
    action = [o] {
      DashboardServer srv(*o);
      std::fprintf(stderr, "[dashboard] http://%s:%d/ (%zu run%s)\n", o->host.c_str(), srv.port(),
                   o->runs.size(), o->runs.size() == 1 ? "" : "s");
      std::fflush(stderr);
      g_dash = &srv;
      std::signal(SIGINT, on_stop);
      std::signal(SIGTERM, on_stop);
      srv.run();
      g_dash = nullptr;
    };
  });
}

}  // namespace tandem::cli
