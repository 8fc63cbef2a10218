// The instruction-set features of the CPU we run on (cpuid, with the OS's register-state
// support from xgetbv), its model name, and the widest vector ISA they add up to. The CPU
// backend picks its GEMM from these, never from a table of model numbers.
#pragma once

#include <string>

namespace tandem {

struct CpuFeatures {
  std::string vendor;      // "GenuineIntel", "AuthenticAMD", ...
  std::string model_name;  // the brand string, e.g. "Intel(R) Xeon(R) Processor"
  int family = 0, model = 0;
  bool sse42 = false, avx = false, fma = false, avx2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx512_fp16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
};

// The vector ISA levels a GEMM kernel can be built for, widest last.
enum class IsaLevel { kScalar, kSse42, kAvx, kAvx2, kAvx512 };

CpuFeatures detect_cpu_features();     // reads this CPU (cpuid + xgetbv)
const CpuFeatures& host_cpu();         // detect_cpu_features(), once per process
IsaLevel widest_isa(const CpuFeatures& f);  // AVX-512 needs F+BW+VL+DQ; AVX2 needs FMA too
const char* isa_name(IsaLevel l);      // "avx512", "avx2", "avx", "sse4.2", "scalar"
// The features as a short list for reports: "avx2 fma avx512f avx512bw ... amx_bf16".
std::string feature_list(const CpuFeatures& f);
// The vector ISA this binary's own kernels were compiled for (-march), e.g. "avx512".
const char* compiled_isa();

}  // namespace tandem
