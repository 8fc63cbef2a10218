// matmul family: out = x · Wᵀ and its backward, on OpenBLAS. Each GEMM is split by output rows
// across OpenMP threads; the split never cuts a reduction, so results do not depend on it.
#include <omp.h>

#include <algorithm>

#include "tandem/backend/cpu/blas.h"
#include "tandem/backend/cpu/cpu_backend.h"

namespace tandem {
namespace {

// Rows [r0, r1) of `rows` for thread `tid` of `nt`, in blocks of 16 so panels stay aligned.
void split_rows(int rows, int nt, int tid, int* r0, int* r1) {
  int blocks = (rows + 15) / 16;
  int b0 = static_cast<int>(static_cast<long>(blocks) * tid / nt);
  int b1 = static_cast<int>(static_cast<long>(blocks) * (tid + 1) / nt);
  *r0 = std::min(rows, b0 * 16);
  *r1 = std::min(rows, b1 * 16);
}

}  // namespace

void CpuBackend::matmul_forward(float* out, const float* x, const float* w, int M, int N, int K) {
  // out(M,N) = x(M,K) · w(N,K)ᵀ; split M, or N when M is too small to share.
  bool by_rows = M >= 16 * threads_;
#pragma omp parallel num_threads(threads_)
  {
    int nt = omp_get_num_threads(), tid = omp_get_thread_num(), a, b;
    if (by_rows) {
      split_rows(M, nt, tid, &a, &b);
      if (b > a)
        blas::sgemm(false, true, b - a, N, K, 1.f, x + (size_t)a * K, K, w, K, 0.f,
                    out + (size_t)a * N, N);
    } else {
      split_rows(N, nt, tid, &a, &b);
      if (b > a)
        blas::sgemm(false, true, M, b - a, K, 1.f, x, K, w + (size_t)a * K, K, 0.f, out + a, N);
    }
  }
}

void CpuBackend::matmul_backward(float* dx, float* dw, const float* dout, const float* x,
                                 const float* w, int M, int N, int K) {
#pragma omp parallel num_threads(threads_)
  {
    int nt = omp_get_num_threads(), tid = omp_get_thread_num(), a, b;
    // dx(M,K) = dout(M,N) · w(N,K), written; split over M.
    if (dx) {
      split_rows(M, nt, tid, &a, &b);
      if (b > a)
        blas::sgemm(false, false, b - a, K, N, 1.f, dout + (size_t)a * N, N, w, K, 0.f,
                    dx + (size_t)a * K, K);
    }
    // dw(N,K) += dout(M,N)ᵀ · x(M,K), accumulated; split over N.
    if (dw) {
      split_rows(N, nt, tid, &a, &b);
      if (b > a)
        blas::sgemm(true, false, b - a, K, M, 1.f, dout + a, N, x, K, 1.f, dw + (size_t)a * K, K);
    }
  }
}

}  // namespace tandem
