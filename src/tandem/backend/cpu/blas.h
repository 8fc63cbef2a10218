// Single-precision GEMM for the CPU backend, loaded at run time: OpenBLAS with its kernel core
// named explicitly from the CPU's features (gemm_select.h), or oneDNN's sgemm on request. The
// user's OPENBLAS_CORETYPE neither decides nor is changed.
#pragma once

#include <string>

#include "tandem/backend/cpu/gemm_select.h"

namespace tandem::blas {

// C(M,N) = alpha * op(A) · op(B) + beta * C, row-major, op = transpose when trans is true.
// Single-threaded: the backend splits every GEMM over its own OpenMP threads.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// What was chosen, and the core OpenBLAS reports it loaded (e.g. "Cooperlake").
const GemmChoice& choice();
const char* core_name();
// One line for reports: "openblas core SkylakeX (avx512; from cpu features)".
std::string describe();

}  // namespace tandem::blas
