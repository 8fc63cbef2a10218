// small_gemm: register tiles of MR rows x NV vectors of 16 columns, the whole reduction per
// tile. A is read in place (either layout: the broadcasts take one float at a time); B is
// read in place when its rows are the columns of C, else transposed once into scratch
// (transpose(), which attention also uses for its keys).
// GCC 12's AVX-512 intrinsics start from an "undefined" vector that -Wuninitialized reports
// inside the system header.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "tandem/backend/cpu/small_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <utility>
#include <vector>

#include "tandem/backend/cpu/blas.h"

namespace tandem::cpu {

void transpose(float* dst, int ldd, const float* src, int lds, int rows, int cols) {
  int r0 = 0;
#if defined(__AVX512F__)
  // Sixteen rows at a time: one gather per column, one full store (scalar copies were a
  // seventh of attention's forward).
  const __m512i offs = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(lds));
  for (; r0 + 16 <= rows; r0 += 16)
    for (int c = 0; c < cols; ++c)
      _mm512_storeu_ps(dst + (size_t)c * ldd + r0,
                       _mm512_i32gather_ps(offs, src + (size_t)r0 * lds + c, 4));
#endif
  for (int r = r0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) dst[(size_t)c * ldd + r] = src[(size_t)r * lds + c];
}

#if defined(__AVX512F__)
namespace {

// Rows per tile for NV vectors: MR x NV accumulators stay within 24 of the 32 registers.
constexpr int kRows[5] = {0, 12, 12, 8, 6};

// C[0:MR, 0:16*NV] (first `cols` columns) = alpha * sum_k a(m, k) * B[k, :] (+ C when acc),
// with a(m, k) = A[m * ars + k * acs] and B's row k at B + k * ldb.
template <int MR, int NV>
void tile(float* C, int ldc, const float* A, ptrdiff_t ars, ptrdiff_t acs, const float* B,
          ptrdiff_t ldb, int K, int cols, float alpha, bool acc) {
  __mmask16 mask[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const int c = std::clamp(cols - 16 * v, 0, 16);
    mask[v] = (__mmask16)((1u << c) - 1);
  }
  __m512 s[MR][NV];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) s[m][v] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    __m512 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      __m512 x = _mm512_maskz_loadu_ps(mask[v], B + k * ldb + 16 * v);
      asm("" : "+v"(x));  // keep the row in a register: one load serves every row of the tile
      b[v] = x;
    }
    const float* a = A + k * acs;
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512 x = _mm512_set1_ps(a[m * ars]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) s[m][v] = _mm512_fmadd_ps(x, b[v], s[m][v]);
    }
  }
  const __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      float* c = C + (ptrdiff_t)m * ldc + 16 * v;
      __m512 r = _mm512_mul_ps(al, s[m][v]);
      if (acc) r = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], c), r);
      _mm512_mask_storeu_ps(c, mask[v], r);
    }
}

using TileFn = void (*)(float*, int, const float*, ptrdiff_t, ptrdiff_t, const float*, ptrdiff_t,
                        int, int, float, bool);

template <int NV, int... I>
constexpr std::array<TileFn, sizeof...(I)> row_table(std::integer_sequence<int, I...>) {
  return {&tile<I + 1, NV>...};
}
// kTiles<NV>[mr - 1]: the tile of mr rows.
template <int NV>
constexpr auto kTiles = row_table<NV>(std::make_integer_sequence<int, kRows[NV]>{});

TileFn tile_fn(int nv, int mr) {
  switch (nv) {
    case 1:
      return kTiles<1>[mr - 1];
    case 2:
      return kTiles<2>[mr - 1];
    case 3:
      return kTiles<3>[mr - 1];
    default:
      return kTiles<4>[mr - 1];
  }
}

}  // namespace

void small_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  const bool acc = beta != 0.f;
  if (K <= 0) {  // an empty sum: alpha * 0 (+ C)
    if (!acc)
      for (int m = 0; m < M; ++m)
        std::fill(C + (ptrdiff_t)m * ldc, C + (ptrdiff_t)m * ldc + N, 0.f);
    return;
  }
  const float* Bk = B;  // row k of op(B) at Bk + k * ldbk
  ptrdiff_t ldbk = ldb;
  if (tb) {  // op(B)[k, n] = B[n, k]: transpose into scratch, rows padded to whole vectors
    static thread_local std::vector<float> scratch;
    const int np = (N + 15) / 16 * 16;
    if (scratch.size() < (size_t)K * np) scratch.resize((size_t)K * np);
    transpose(scratch.data(), np, B, ldb, N, K);
    Bk = scratch.data();
    ldbk = np;
  }
  const ptrdiff_t ars = ta ? 1 : lda, acs = ta ? lda : 1;
  for (int n0 = 0; n0 < N; n0 += 64) {
    const int cols = std::min(64, N - n0), nv = (cols + 15) / 16, mr = kRows[nv];
    const int tiles = (M + mr - 1) / mr;
    for (int t = 0; t < tiles; ++t) {  // rows split evenly over the tiles
      const int m0 = (int)((long)M * t / tiles), rows = (int)((long)M * (t + 1) / tiles) - m0;
      tile_fn(nv, rows)(C + (ptrdiff_t)m0 * ldc + n0, ldc, A + m0 * ars, ars, acs, Bk + n0, ldbk, K,
                        cols, alpha, acc);
    }
  }
}

#else

void small_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc) {
  blas::sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

#endif

}  // namespace tandem::cpu
