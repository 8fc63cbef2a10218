// tandem conformance --backend NAME: certifies a backend against the CPU reference, kernel by
// kernel and then with a short training run. Exit 0 on a pass, 2 on a fail, 1 on an error.
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "tandem/backend/backend.h"
#include "tandem/cli/commands.h"
#include "tandem/conformance/cases.h"
#include "tandem/conformance/conformance.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"

namespace tandem::cli {

void add_conformance(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("conformance", "certify a backend's kernels and a short training run against the CPU");
  struct Args {
    std::string backend, config = "configs/tiny.toml", json;
    int threads = 0, steps = 50;
    double tolerance = -1;  // below 0: the default for the backend's matmul precision
    bool no_training = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--backend,-b", a->backend, "backend to certify (" + [] {
    std::string s;
    for (const auto& n : backend_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }() + ")")->required();
  cmd->add_option("--threads", a->threads, "threads for both backends (0 = all cores)");
  cmd->add_option("--config", a->config, "run config for the training check")->capture_default_str();
  cmd->add_option("--steps", a->steps, "training steps compared")->capture_default_str();
  cmd->add_option("--tolerance", a->tolerance, "largest relative loss difference accepted per step (default 1e-4; 2e-2 for bf16 matmuls)");
  cmd->add_flag("--no-training", a->no_training, "kernel cases only");
  cmd->add_option("--json", a->json, "also write the report as JSON to this file");
  action = [a] {
    if (a->steps <= 0) fail("[conformance] --steps must be positive, got " + std::to_string(a->steps));
    std::unique_ptr<Backend> test = make_backend(a->backend, a->threads);
    // The reference runs single-threaded: when certifying the CPU backend itself, the case
    // then also checks that its threaded kernels agree with the serial ones.
    std::unique_ptr<Backend> ref = make_backend("cpu", 1);
    ConformanceReport rep;
    rep.backend = a->backend;
    rep.reference = "cpu (1 thread)";
    rep.matmul_precision = test->matmul_precision();
    const double tolerance =
        a->tolerance >= 0 ? a->tolerance : conformance::training_tolerance(rep.matmul_precision);
    run_kernel_cases(*test, *ref, rep);
    if (!a->no_training) {
      if (!path_exists(a->config))
        fail("[conformance] training check: config '" + a->config +
             "' not found (pass --config FILE, or --no-training)");
      rep.training = run_training_check(a->config, a->backend, a->threads, a->steps, tolerance);
    }
    std::printf("%s", rep.to_text().c_str());
    std::fflush(stdout);
    if (!a->json.empty()) atomic_write_file(a->json, rep.to_json().dump(2) + "\n");
    if (!rep.pass()) std::exit(2);
  };
}

}  // namespace tandem::cli
