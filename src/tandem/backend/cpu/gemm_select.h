// Which GEMM the CPU backend runs, chosen from the CPU's instruction-set features alone (a new
// CPU model that OpenBLAS's table does not know still gets kernels of its vector width).
// Pure logic, so the choice can be tested over the feature sets of CPUs we do not have.
#pragma once

#include <string>

#include "tandem/core/cpu_features.h"

namespace tandem::blas {

struct GemmChoice {
  std::string provider;  // "openblas" or "onednn"
  std::string core;      // the OpenBLAS core to load (OPENBLAS_CORETYPE), e.g. "SkylakeX"
  IsaLevel isa = IsaLevel::kScalar;  // the vector ISA of those kernels
  std::string why;       // "from cpu features", or the override that set it
};

// `provider_override` (TANDEM_GEMM) and `core_override` (TANDEM_BLAS_CORETYPE) are for
// experiments; null or empty means choose. Throws Error naming the variable on a bad value.
GemmChoice choose_gemm(const CpuFeatures& f, const char* provider_override,
                       const char* core_override);

// The vector ISA of an OpenBLAS x86 core's kernels ("SkylakeX" -> avx512, "Prescott" -> sse3
// counts as kScalar here: below SSE4.2).
IsaLevel openblas_core_isa(const std::string& core);

}  // namespace tandem::blas
