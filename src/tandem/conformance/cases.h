// The conformance case table: per kernel, its error class (which sets the threshold), the
// shapes it runs at, and a function that sets up inputs and calls the kernel once.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tandem/conformance/harness.h"

namespace tandem::conformance {

// Normalized-MSE thresholds for fp32 backends (docs/conformance.md explains the choice).
enum ErrorClass { kExact, kElementwise, kReduction, kMatmul };
double threshold_f32(ErrorClass e);
// The threshold for a backend whose matmuls multiply in `matmul_precision` ("fp32", "bf16").
double threshold_for(ErrorClass e, const std::string& matmul_precision);
// The training check's default tolerance (largest relative loss difference per step).
double training_tolerance(const std::string& matmul_precision);

using Dims = std::vector<int>;
struct KernelCases {
  std::string kernel;
  ErrorClass error;
  std::vector<Dims> shapes;
  std::function<void(Ctx&, const Dims&)> run;
  int weight_dim = -1;  // the dimension that holds a WType (wmatmul): the case's dtype label
};

const std::vector<KernelCases>& all_cases();

}  // namespace tandem::conformance
