// Single-precision GEMM from OpenBLAS, loaded at run time. OpenBLAS picks its kernels when it
// is loaded, from OPENBLAS_CORETYPE if set; we clear that variable around the load so the
// library detects the real CPU (AVX-512 where present) whatever the environment says.
#pragma once

namespace tandem::blas {

// C(M,N) = alpha * op(A) · op(B) + beta * C, row-major, op = transpose when trans is true.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// The core OpenBLAS chose (e.g. "Cooperlake", "Haswell"), for benchmark reports.
const char* core_name();

}  // namespace tandem::blas
