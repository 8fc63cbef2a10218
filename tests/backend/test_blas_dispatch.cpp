// The CPU backend's GEMM must use the machine's widest vector kernels whatever
// OPENBLAS_CORETYPE says (CI machines force it to Haswell), and leave the variable as it was.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "tandem/backend/cpu/blas.h"

TEST(BlasDispatch, IgnoresForcedCoreType) {
  // Runs in its own binary so that this is the first load of OpenBLAS in the process.
  setenv("OPENBLAS_CORETYPE", "Haswell", 1);
  std::string core = tandem::blas::core_name();
  EXPECT_STREQ(std::getenv("OPENBLAS_CORETYPE"), "Haswell") << "environment not restored";
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    EXPECT_NE(core, "Haswell") << "OpenBLAS was left on AVX2 kernels on an AVX-512 machine";
  }
  // And the GEMM it loaded computes: 2x2 = [1 2; 3 4] * [5 6; 7 8]^T
  float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, c[4] = {0, 0, 0, 0};
  tandem::blas::sgemm(false, true, 2, 2, 2, 1.f, a, 2, b, 2, 0.f, c, 2);
  EXPECT_FLOAT_EQ(c[0], 17);
  EXPECT_FLOAT_EQ(c[1], 23);
  EXPECT_FLOAT_EQ(c[2], 39);
  EXPECT_FLOAT_EQ(c[3], 53);
}
