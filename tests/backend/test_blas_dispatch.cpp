// The CPU backend's GEMM runs kernels of the machine's widest vector ISA whatever
// OPENBLAS_CORETYPE says and whether or not OpenBLAS's own table knows this CPU (Debian's
// 0.3.21 takes some AVX-512 Xeons for Prescott, SSE3), and leaves the variable as it was.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "tandem/backend/cpu/blas.h"
#include "tandem/core/cpu_features.h"

using namespace tandem;

TEST(BlasDispatch, RunsTheWidestIsaOfThisCpu) {
  // Runs in its own binary so that this is the first load of OpenBLAS in the process. The
  // user's environment asks for SSE3 kernels; the backend must not take them.
  setenv("OPENBLAS_CORETYPE", "Prescott", 1);
  unsetenv("TANDEM_BLAS_CORETYPE");
  unsetenv("TANDEM_GEMM");
  const std::string core = blas::core_name();
  EXPECT_STREQ(std::getenv("OPENBLAS_CORETYPE"), "Prescott") << "environment not restored";
  const IsaLevel want = widest_isa(host_cpu());
  EXPECT_EQ(isa_name(blas::openblas_core_isa(core)), std::string(isa_name(want)))
      << "OpenBLAS runs core " << core << " on a CPU with " << feature_list(host_cpu());
  EXPECT_EQ(blas::choice().why, "from cpu features");
  EXPECT_NE(blas::describe().find(core), std::string::npos) << blas::describe();
  // And the GEMM it loaded computes: 2x2 = [1 2; 3 4] * [5 6; 7 8]^T
  float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, c[4] = {0, 0, 0, 0};
  blas::sgemm(false, true, 2, 2, 2, 1.f, a, 2, b, 2, 0.f, c, 2);
  EXPECT_FLOAT_EQ(c[0], 17);
  EXPECT_FLOAT_EQ(c[1], 23);
  EXPECT_FLOAT_EQ(c[2], 39);
  EXPECT_FLOAT_EQ(c[3], 53);
}
