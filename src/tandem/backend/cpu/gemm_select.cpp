// The GEMM choice: the widest OpenBLAS core the features allow. Cooperlake's single-precision
// kernels are SkylakeX's; it is chosen where AVX512-BF16 exists so OpenBLAS's bf16 routines get
// native instructions too.
#include "tandem/backend/cpu/gemm_select.h"

#include <cstring>

#include "tandem/core/error.h"

namespace tandem::blas {

IsaLevel openblas_core_isa(const std::string& c) {
  if (c == "SkylakeX" || c == "Cooperlake" || c == "SapphireRapids") return IsaLevel::kAvx512;
  if (c == "Haswell" || c == "Zen") return IsaLevel::kAvx2;
  if (c == "Sandybridge") return IsaLevel::kAvx;
  if (c == "Nehalem" || c == "Barcelona" || c == "Bulldozer" || c == "Piledriver" ||
      c == "Steamroller" || c == "Excavator")
    return IsaLevel::kSse42;
  return IsaLevel::kScalar;  // Prescott, Core2, Atom, ... and anything unknown
}

GemmChoice choose_gemm(const CpuFeatures& f, const char* provider_override,
                       const char* core_override) {
  GemmChoice c;
  c.provider = "openblas";
  c.why = "from cpu features";
  const bool amd = f.vendor == "AuthenticAMD" || f.vendor == "HygonGenuine";
  switch (widest_isa(f)) {
    case IsaLevel::kAvx512: c.core = f.avx512_bf16 ? "Cooperlake" : "SkylakeX"; break;
    case IsaLevel::kAvx2: c.core = amd ? "Zen" : "Haswell"; break;
    case IsaLevel::kAvx: c.core = "Sandybridge"; break;
    case IsaLevel::kSse42: c.core = "Nehalem"; break;
    case IsaLevel::kScalar: c.core = "Prescott"; break;
  }
  if (core_override && *core_override) {
    c.core = core_override;
    c.why = std::string("TANDEM_BLAS_CORETYPE=") + core_override;
  }
  c.isa = openblas_core_isa(c.core);
  if (provider_override && *provider_override) {
    const std::string p = provider_override;
    if (p != "openblas" && p != "onednn")
      fail("[cpu] TANDEM_GEMM='" + p + "': expected 'openblas' or 'onednn'");
    c.provider = p;
    if (p == "onednn") {
      c.core = "jit";
      c.isa = widest_isa(f);  // oneDNN dispatches on the features itself
    }
    c.why = "TANDEM_GEMM=" + p;
  }
  return c;
}

}  // namespace tandem::blas
