// Loads OpenBLAS with dlopen so its CPU dispatch ignores OPENBLAS_CORETYPE (see blas.h).
// TANDEM_BLAS_CORETYPE, if set, is passed on instead, for experiments.
#include "tandem/backend/cpu/blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "tandem/core/error.h"

namespace tandem::blas {
namespace {

enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                         float, float*, int);
using SetThreadsFn = void (*)(int);
using CoreNameFn = char* (*)();

struct Lib {
  SgemmFn sgemm = nullptr;
  CoreNameFn core_name = nullptr;
};

Lib load() {
  const char* saved = std::getenv("OPENBLAS_CORETYPE");
  std::string saved_value = saved ? saved : "";
  const char* forced = std::getenv("TANDEM_BLAS_CORETYPE");
  if (forced && *forced) {
    setenv("OPENBLAS_CORETYPE", forced, 1);
  } else {
    unsetenv("OPENBLAS_CORETYPE");
  }
  void* h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (saved) {
    setenv("OPENBLAS_CORETYPE", saved_value.c_str(), 1);
  } else {
    unsetenv("OPENBLAS_CORETYPE");
  }
  if (!h) fail(std::string("[cpu] cannot load OpenBLAS (libopenblas.so.0): ") + dlerror());
  Lib lib;
  lib.sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "cblas_sgemm"));
  lib.core_name = reinterpret_cast<CoreNameFn>(dlsym(h, "openblas_get_corename"));
  auto set_threads = reinterpret_cast<SetThreadsFn>(dlsym(h, "openblas_set_num_threads"));
  if (!lib.sgemm || !set_threads) fail("[cpu] OpenBLAS lacks cblas_sgemm");
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
  lib().sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, M, N, K, alpha,
              A, lda, B, ldb, beta, C, ldc);
}

const char* core_name() { return lib().core_name ? lib().core_name() : "unknown"; }

}  // namespace tandem::blas
