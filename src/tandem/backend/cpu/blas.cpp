// Loads the chosen GEMM with dlopen. OpenBLAS reads OPENBLAS_CORETYPE once, when it is loaded:
// we set it to the chosen core for the load and restore the user's value after, so OpenBLAS's
// own CPU table (which lacks newer models and falls back to SSE3 kernels) never decides.
#include "tandem/backend/cpu/blas.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "tandem/core/error.h"

namespace tandem::blas {
namespace {

enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                         float, float*, int);
using DnnlSgemmFn = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t,
                            const float*, int64_t, float, float*, int64_t);
using SetThreadsFn = void (*)(int);
using CoreNameFn = char* (*)();

struct Lib {
  GemmChoice choice;
  SgemmFn sgemm = nullptr;
  DnnlSgemmFn dnnl_sgemm = nullptr;
  std::string core = "unknown";
};

void* load_openblas(const std::string& core) {
  const char* saved = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved_value = saved ? saved : "";
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  void* h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (saved)
    setenv("OPENBLAS_CORETYPE", saved_value.c_str(), 1);
  else
    unsetenv("OPENBLAS_CORETYPE");
  if (!h) fail(std::string("[cpu] cannot load OpenBLAS (libopenblas.so.0): ") + dlerror());
  return h;
}

Lib load() {
  Lib lib;
  lib.choice = choose_gemm(host_cpu(), std::getenv("TANDEM_GEMM"),
                           std::getenv("TANDEM_BLAS_CORETYPE"));
  if (lib.choice.provider == "onednn") {
    void* h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) fail(std::string("[cpu] TANDEM_GEMM=onednn: cannot load libdnnl.so.2: ") + dlerror());
    lib.dnnl_sgemm = reinterpret_cast<DnnlSgemmFn>(dlsym(h, "dnnl_sgemm"));
    if (!lib.dnnl_sgemm) fail("[cpu] libdnnl.so.2 lacks dnnl_sgemm");
    lib.core = "jit";
    return lib;
  }
  void* h = load_openblas(lib.choice.core);
  lib.sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "cblas_sgemm"));
  auto core_fn = reinterpret_cast<CoreNameFn>(dlsym(h, "openblas_get_corename"));
  auto set_threads = reinterpret_cast<SetThreadsFn>(dlsym(h, "openblas_set_num_threads"));
  if (!lib.sgemm || !set_threads) fail("[cpu] OpenBLAS lacks cblas_sgemm");
  if (core_fn) lib.core = core_fn();
  // Threads come from our own OpenMP split of every GEMM, so each call runs single-threaded.
  set_threads(1);
  return lib;
}

const Lib& lib() {
  static Lib l = load();
  return l;
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  const Lib& l = lib();
  if (l.dnnl_sgemm) {
    l.dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta,
                 C, ldc);
    return;
  }
  l.sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, M, N, K, alpha, A,
          lda, B, ldb, beta, C, ldc);
}

const GemmChoice& choice() { return lib().choice; }
const char* core_name() { return lib().core.c_str(); }

std::string describe() {
  const Lib& l = lib();
  std::string s = l.choice.provider + " core " + l.core + " (" +
                  isa_name(l.dnnl_sgemm ? l.choice.isa : openblas_core_isa(l.core)) + "; " +
                  l.choice.why;
  if (!l.dnnl_sgemm && l.core != l.choice.core) s += "; asked for " + l.choice.core;
  return s + ")";
}

}  // namespace tandem::blas
