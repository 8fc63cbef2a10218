// cpuid leaves 1 and 7 for the feature bits, xgetbv for the OS's saved register state (a CPU
// with AVX-512 under an OS that does not save ZMM registers cannot use it), 0x80000002-4 for
// the brand string.
#include "tandem/core/cpu_features.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace tandem {
namespace {

#if defined(__x86_64__) || defined(__i386__)
bool leaf(unsigned l, unsigned sub, unsigned r[4]) {
  if ((unsigned)__get_cpuid_max(l & 0x80000000u, nullptr) < l) return false;
  __cpuid_count(l, sub, r[0], r[1], r[2], r[3]);
  return true;
}
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}
#endif

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

}  // namespace

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned r[4] = {0, 0, 0, 0};
  if (leaf(0, 0, r)) {
    char v[13] = {0};
    std::memcpy(v, &r[1], 4);
    std::memcpy(v + 4, &r[3], 4);
    std::memcpy(v + 8, &r[2], 4);
    f.vendor = v;
  }
  if (!leaf(1, 0, r)) return f;
  const unsigned base_family = (r[0] >> 8) & 0xf, base_model = (r[0] >> 4) & 0xf;
  f.family = (int)(base_family == 0xf ? base_family + ((r[0] >> 20) & 0xff) : base_family);
  f.model = (int)((base_family == 6 || base_family == 0xf) ? base_model | (((r[0] >> 16) & 0xf) << 4)
                                                             : base_model);
  const bool osxsave = r[2] >> 27 & 1;
  f.sse42 = r[2] >> 20 & 1;
  const bool avx_bit = r[2] >> 28 & 1, fma_bit = r[2] >> 12 & 1;
  // The OS must save the registers: XMM+YMM (bits 1, 2) for AVX, plus opmask and ZMM
  // (bits 5-7) for AVX-512, plus tile state (17, 18) for AMX.
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm = (xcr0 & 0x6) == 0x6, zmm = ymm && (xcr0 & 0xe0) == 0xe0;
  const bool tiles = (xcr0 & 0x60000) == 0x60000;
  f.avx = avx_bit && ymm;
  f.fma = fma_bit && f.avx;
  if (leaf(7, 0, r)) {
    f.avx2 = f.avx && (r[1] >> 5 & 1);
    f.avx512f = zmm && (r[1] >> 16 & 1);
    f.avx512dq = f.avx512f && (r[1] >> 17 & 1);
    f.avx512bw = f.avx512f && (r[1] >> 30 & 1);
    f.avx512vl = f.avx512f && (r[1] >> 31 & 1);
    f.avx512_vnni = f.avx512f && (r[2] >> 11 & 1);
    f.avx512_fp16 = f.avx512f && (r[3] >> 23 & 1);
    f.amx_bf16 = tiles && (r[3] >> 22 & 1);
    f.amx_tile = tiles && (r[3] >> 24 & 1);
    f.amx_int8 = tiles && (r[3] >> 25 & 1);
    unsigned s[4] = {0, 0, 0, 0};
    if (r[0] >= 1 && leaf(7, 1, s)) f.avx512_bf16 = f.avx512f && (s[0] >> 5 & 1);
  }
  char brand[49] = {0};
  unsigned b[4];
  if (leaf(0x80000004u, 0, b)) {
    for (unsigned i = 0; i < 3; ++i) {
      leaf(0x80000002u + i, 0, b);
      std::memcpy(brand + 16 * i, b, 16);
    }
    f.model_name = trim(brand);
  }
#endif
  if (f.model_name.empty()) f.model_name = "unknown CPU";
  return f;
}

const CpuFeatures& host_cpu() {
  static const CpuFeatures f = detect_cpu_features();
  return f;
}

IsaLevel widest_isa(const CpuFeatures& f) {
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) return IsaLevel::kAvx512;
  if (f.avx2 && f.fma) return IsaLevel::kAvx2;
  if (f.avx) return IsaLevel::kAvx;
  if (f.sse42) return IsaLevel::kSse42;
  return IsaLevel::kScalar;
}

const char* isa_name(IsaLevel l) {
  switch (l) {
    case IsaLevel::kAvx512: return "avx512";
    case IsaLevel::kAvx2: return "avx2";
    case IsaLevel::kAvx: return "avx";
    case IsaLevel::kSse42: return "sse4.2";
    case IsaLevel::kScalar: break;
  }
  return "scalar";
}

std::string feature_list(const CpuFeatures& f) {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.sse42, "sse4.2");
  add(f.avx, "avx");
  add(f.fma, "fma");
  add(f.avx2, "avx2");
  add(f.avx512f, "avx512f");
  add(f.avx512dq, "avx512dq");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.avx512_bf16, "avx512_bf16");
  add(f.avx512_fp16, "avx512_fp16");
  add(f.amx_tile, "amx_tile");
  add(f.amx_bf16, "amx_bf16");
  add(f.amx_int8, "amx_int8");
  return s.empty() ? "none" : s;
}

const char* compiled_isa() {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE4_2__)
  return "sse4.2";
#else
  return "scalar";
#endif
}

}  // namespace tandem
