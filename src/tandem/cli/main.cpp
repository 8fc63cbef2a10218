// tandem: the command-line entry point. Parses arguments, runs one subcommand, and turns an
// expected failure into one message on stderr and exit status 1.
#include <cstdio>
#include <exception>
#include <new>

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
  tandem::cli::add_status(app, action);
  tandem::cli::add_serve(app, action);
  tandem::cli::add_dashboard(app, action);
  tandem::cli::add_plot(app, action);
  tandem::cli::add_export(app, action);
  tandem::cli::add_verify(app, action);
  tandem::cli::add_eval(app, action);
  tandem::cli::add_conformance(app, action);
  tandem::cli::add_logits(app, action);
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
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    // A failure no boundary translated (a file-system or JSON library error): still one line.
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
