// Subcommand registration: each cli/*.cpp file adds one subcommand to the tandem app.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace tandem::cli {

// A registered subcommand's action; runs after parsing, inside the error boundary.
using Action = std::function<void()>;

void add_data(CLI::App& app, Action& action);
void add_train(CLI::App& app, Action& action);
void add_generate(CLI::App& app, Action& action);
void add_info(CLI::App& app, Action& action);
void add_status(CLI::App& app, Action& action);
void add_serve(CLI::App& app, Action& action);
void add_export(CLI::App& app, Action& action);
void add_verify(CLI::App& app, Action& action);
void add_eval(CLI::App& app, Action& action);
void add_logits(CLI::App& app, Action& action);
void add_conformance(CLI::App& app, Action& action);
void add_dashboard(CLI::App& app, Action& action);
void add_plot(CLI::App& app, Action& action);

}  // namespace tandem::cli
