// Backend conformance: every kernel of backend.h, forward and backward, over a spread of
// shapes, run on the backend under test and on the CPU reference with the same inputs. A case
// passes when each output's normalized mean squared error is within the kernel's threshold,
// the non-finite values sit where the reference has them, nothing was written outside the
// outputs (guard regions), and running it twice gives the same bits. A short training run on
// the backend against the CPU then checks the kernels together. See docs/conformance.md.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tandem/backend/backend.h"

namespace tandem {

struct CaseResult {
  std::string kernel, shape;
  std::string dtype = "f32";
  double nmse = 0, threshold = 0;
  bool finite_ok = true, guards_ok = true, deterministic = true;
  double ms = 0;  // median time of the kernel on the backend under test
  bool pass() const { return nmse <= threshold && finite_ok && guards_ok && deterministic; }
  std::string why() const;  // empty when it passes
};

struct TrainingCheck {
  bool ran = false;
  int steps = 0;
  double max_rel_diff = 0, tolerance = 0;
  bool pass() const { return !ran || max_rel_diff <= tolerance; }
};

struct ConformanceReport {
  std::string backend, reference, matmul_precision = "fp32";
  std::string hardware, reference_hardware;  // Backend::describe() of each side
  std::vector<CaseResult> cases;
  TrainingCheck training;
  bool pass() const;
  nlohmann::json to_json() const;
  std::string to_text() const;
};

// The kernel names the suite covers, in backend.h order (also the names a report uses).
const std::vector<std::string>& conformance_kernels();

// Runs every kernel case of `test` against `ref`.
void run_kernel_cases(Backend& test, Backend& ref, ConformanceReport& report);

// Trains `steps` steps of the run config at config_path on backend `name` and on the CPU, in
// temporary directories, and compares the loss curves step by step.
TrainingCheck run_training_check(const std::string& config_path, const std::string& name,
                                 int threads, int steps, double tolerance);

}  // namespace tandem
