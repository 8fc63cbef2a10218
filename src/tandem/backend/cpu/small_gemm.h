// Single-threaded GEMM for the small, oddly shaped products inside attention (a block of
// queries against the keys before it, head widths of 16-128): register tiles over the whole
// reduction, no per-call packing of A, so a 64 x 256 x 48 product does not pay a general
// library's set-up. Each output element is one accumulator fed in reduction order, so the
// result depends only on the operands and K, never on M, N or the tile it fell in.
#pragma once

namespace tandem::cpu {

// C(M,N) = alpha * op(A) · op(B) + beta * C, row-major (op = transpose when t_ is true);
// beta is 0 or 1. Where the build has no AVX-512 this is OpenBLAS's sgemm.
void small_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc);

// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols (exact copies).
void transpose(float* dst, int ldd, const float* src, int lds, int rows, int cols);

}  // namespace tandem::cpu
