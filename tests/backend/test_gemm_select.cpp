// The GEMM choice over the feature sets of CPUs other than the one the test runs on, and the
// feature detection of this one against the kernel's own reading (/proc/cpuinfo).
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "tandem/backend/cpu/gemm_select.h"
#include "tandem/core/cpu_features.h"
#include "tandem/core/error.h"

using namespace tandem;
using blas::choose_gemm;

namespace {

CpuFeatures avx2_cpu(const char* vendor) {
  CpuFeatures f;
  f.vendor = vendor;
  f.sse42 = f.avx = f.fma = f.avx2 = true;
  return f;
}
CpuFeatures avx512_cpu(const char* vendor) {
  CpuFeatures f = avx2_cpu(vendor);
  f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512_vnni = true;
  return f;
}
std::string core_for(const CpuFeatures& f) { return choose_gemm(f, nullptr, nullptr).core; }

}  // namespace

TEST(GemmSelect, EmeraldRapidsXeonGetsAvx512Kernels) {
  // Family 6 model 207: OpenBLAS 0.3.21's table does not know it and falls back to Prescott.
  CpuFeatures f = avx512_cpu("GenuineIntel");
  f.family = 6;
  f.model = 207;
  f.avx512_bf16 = f.avx512_fp16 = f.amx_tile = f.amx_bf16 = f.amx_int8 = true;
  auto c = choose_gemm(f, nullptr, nullptr);
  EXPECT_EQ(c.provider, "openblas");
  EXPECT_EQ(c.core, "Cooperlake");
  EXPECT_EQ(c.isa, IsaLevel::kAvx512);
}

TEST(GemmSelect, ZenFourAndFiveGetAvx512Kernels) {
  for (int model : {0x11, 0x44}) {  // Zen 4 (family 25), Zen 5 (family 26)
    CpuFeatures f = avx512_cpu("AuthenticAMD");
    f.family = model == 0x11 ? 25 : 26;
    f.model = model;
    f.avx512_bf16 = true;
    EXPECT_EQ(core_for(f), "Cooperlake");
    EXPECT_EQ(choose_gemm(f, nullptr, nullptr).isa, IsaLevel::kAvx512);
  }
}

TEST(GemmSelect, SkylakeServerWithoutBf16GetsSkylakeX) {
  EXPECT_EQ(core_for(avx512_cpu("GenuineIntel")), "SkylakeX");
}

TEST(GemmSelect, Avx2OnlyCpusGetAvx2Kernels) {
  EXPECT_EQ(core_for(avx2_cpu("GenuineIntel")), "Haswell");
  EXPECT_EQ(core_for(avx2_cpu("AuthenticAMD")), "Zen");
  EXPECT_EQ(choose_gemm(avx2_cpu("AuthenticAMD"), nullptr, nullptr).isa, IsaLevel::kAvx2);
}

TEST(GemmSelect, PartialAvx512IsNotAvx512) {
  // AVX-512F without BW/VL (Knights Landing): the SkylakeX kernels need them.
  CpuFeatures f = avx2_cpu("GenuineIntel");
  f.avx512f = true;
  EXPECT_EQ(widest_isa(f), IsaLevel::kAvx2);
  EXPECT_EQ(core_for(f), "Haswell");
}

TEST(GemmSelect, CpusWithoutFmaGetNoFmaKernels) {
  CpuFeatures sandy;  // AVX without FMA or AVX2 (Sandy/Ivy Bridge)
  sandy.vendor = "GenuineIntel";
  sandy.sse42 = sandy.avx = true;
  EXPECT_EQ(core_for(sandy), "Sandybridge");
  EXPECT_EQ(choose_gemm(sandy, nullptr, nullptr).isa, IsaLevel::kAvx);
  CpuFeatures nehalem;
  nehalem.sse42 = true;
  EXPECT_EQ(core_for(nehalem), "Nehalem");
  EXPECT_EQ(core_for(CpuFeatures{}), "Prescott");
}

TEST(GemmSelect, OverridesAreNamedAndChecked) {
  CpuFeatures f = avx512_cpu("GenuineIntel");
  auto c = choose_gemm(f, nullptr, "Haswell");
  EXPECT_EQ(c.core, "Haswell");
  EXPECT_EQ(c.isa, IsaLevel::kAvx2);
  EXPECT_EQ(c.why, "TANDEM_BLAS_CORETYPE=Haswell");
  auto d = choose_gemm(f, "onednn", nullptr);
  EXPECT_EQ(d.provider, "onednn");
  EXPECT_EQ(d.why, "TANDEM_GEMM=onednn");
  EXPECT_EQ(choose_gemm(f, "", "").core, "SkylakeX");
  try {
    choose_gemm(f, "mkl", nullptr);
    FAIL() << "an unknown provider was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("TANDEM_GEMM='mkl'"), std::string::npos) << e.what();
  }
}

TEST(CpuFeatures, DetectionAgreesWithProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  if (!in) GTEST_SKIP() << "no /proc/cpuinfo";
  std::string line;
  std::set<std::string> flags;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream ss(line.substr(line.find(':') + 1));
      for (std::string w; ss >> w;) flags.insert(w);
      break;
    }
  ASSERT_FALSE(flags.empty());
  const CpuFeatures& f = host_cpu();
  auto has = [&](const char* n) { return flags.count(n) > 0; };
  EXPECT_EQ(f.avx, has("avx"));
  EXPECT_EQ(f.fma, has("fma"));
  EXPECT_EQ(f.avx2, has("avx2"));
  EXPECT_EQ(f.avx512f, has("avx512f"));
  EXPECT_EQ(f.avx512bw, has("avx512bw"));
  EXPECT_EQ(f.avx512vl, has("avx512vl"));
  EXPECT_EQ(f.avx512dq, has("avx512dq"));
  EXPECT_EQ(f.avx512_vnni, has("avx512_vnni"));
  EXPECT_EQ(f.avx512_bf16, has("avx512_bf16"));
  EXPECT_EQ(f.amx_tile, has("amx_tile"));
  EXPECT_FALSE(f.model_name.empty());
}
