// tandem: the command-line entry point. Parses arguments, runs one subcommand, and turns an
// expected failure into one message on stderr and exit status 1.
#include <cstdio>

#include "tandem/cli/commands.h"
#include "tandem/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"tandem: train transformer language models, checkpoint, sample"};
  app.require_subcommand(1);
  tandem::cli::Action action;
  tandem::cli::add_data(app, action);
  tandem::cli::add_train(app, action);
  tandem::cli::add_generate(app, action);
  tandem::cli::add_info(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (action) action();
  } catch (const tandem::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
