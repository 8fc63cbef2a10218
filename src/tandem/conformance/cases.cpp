// The conformance cases: one CASE per kernel of backend.h (a build step checks that every
// kernel has one), each over a spread of shapes: length-1 dimensions, odd sizes that are not
// multiples of any tile, and the shapes of the `small` model.
#include "tandem/conformance/cases.h"

#include <algorithm>

#include "tandem/infer/quant.h"

namespace tandem::conformance {
namespace {

std::vector<int32_t> tokens(int n, int V, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (int32_t)((i * 7 + salt * 3 + i * i) % V);
  return t;
}

AttnShape attn(int B, int T, int H, int Hkv, int D) { return AttnShape{B, T, H, Hkv, D}; }

// Packed rows: documents of 5, 1, 9, 3, 12, 2, ... tokens one after another (a row's last is cut
// at T), as AttnShape::doc_start gives them.
std::vector<int32_t> doc_starts(int B, int T) {
  static const int kLen[] = {5, 1, 9, 3, 12, 2, 7};
  std::vector<int32_t> ds((size_t)B * T);
  for (int b = 0; b < B; ++b)
    for (int t = 0, start = 0, k = b; t < T; ++t) {
      if (t - start == kLen[k % 7]) start = t, ++k;
      ds[(size_t)b * T + t] = start;
    }
  return ds;
}

// Three sequences sharing one step (rows n = 1, 3, 2) in cache slots 2, 0, 1.
struct Batch3 {
  std::vector<int32_t> slot{2, 0, 1}, pos0{4, 0, 9}, n{1, 3, 2}, row0{0, 1, 4};
  KvBatch kv(size_t slot_stride) const {
    return KvBatch{slot.data(), pos0.data(), n.data(), row0.data(), 3, slot_stride};
  }
  int rows() const { return 6; }
  int tmax() const { return 16; }
};

}  // namespace

const std::vector<KernelCases>& all_cases() {
  static const std::vector<KernelCases> cases = {
      {"embedding_forward", kElementwise,
       {{1, 1, 1}, {7, 33, 11}, {64, 288, 4096}},
       [](Ctx& c, const Dims& d) {
         const int N = d[0], C = d[1], V = d[2];
         float* table = c.input((size_t)V * C);
         int32_t* tok = c.ints(tokens(N, V, 1));
         float* out = c.output((size_t)N * C);
         c.time([&] { c.be().embedding_forward(out, tok, table, N, C); });
       }},
      {"embedding_backward", kReduction,
       {{1, 1, 1}, {7, 33, 5}, {64, 288, 4096}},
       [](Ctx& c, const Dims& d) {
         const int N = d[0], C = d[1], V = d[2];
         float* dout = c.input((size_t)N * C);
         int32_t* tok = c.ints(tokens(N, V, 2));
         float* dtable = c.output((size_t)V * C, c.values((size_t)V * C, -1, 1));
         c.time([&] { c.be().embedding_backward(dtable, dout, tok, N, C); });
       }},
      {"rmsnorm_forward", kReduction,
       {{1, 1}, {5, 33}, {64, 288}},
       [](Ctx& c, const Dims& d) {
         const int N = d[0], C = d[1];
         float* x = c.input((size_t)N * C);
         float* w = c.input(C, 0.5f, 1.5f);
         float* out = c.output((size_t)N * C);
         float* rstd = c.output(N);
         c.time([&] { c.be().rmsnorm_forward(out, rstd, x, w, N, C, 1e-5f); });
       }},
      {"rmsnorm_backward", kReduction,
       {{1, 1}, {5, 33}, {64, 288}},
       [](Ctx& c, const Dims& d) {
         const int N = d[0], C = d[1];
         float* dout = c.input((size_t)N * C);
         float* x = c.input((size_t)N * C);
         float* w = c.input(C, 0.5f, 1.5f);
         float* rstd = c.input(N, 0.5f, 2.f);
         float* dx = c.output((size_t)N * C);
         float* dw = c.output(C, c.values(C, -1, 1));
         c.time([&] { c.be().rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C); });
       }},
      {"add_rmsnorm_forward", kReduction,
       {{1, 1}, {5, 33}, {64, 288}},
       [](Ctx& c, const Dims& d) {
         const int N = d[0], C = d[1];
         // sum aliases a, as the model calls it (the residual stream updated in place)
         float* h = c.output((size_t)N * C, c.values((size_t)N * C, -1, 1));
         float* x = c.input((size_t)N * C);
         float* w = c.input(C, 0.5f, 1.5f);
         float* out = c.output((size_t)N * C);
         float* rstd = c.output(N);
         c.time([&] { c.be().add_rmsnorm_forward(h, out, rstd, h, x, w, N, C, 1e-5f); });
       }},
      {"matmul_forward", kMatmul,
       {{1, 1, 1}, {7, 13, 29}, {33, 65, 17}, {64, 768, 288}},
       [](Ctx& c, const Dims& d) {
         const int M = d[0], N = d[1], K = d[2];
         float* x = c.input((size_t)M * K);
         float* w = c.input((size_t)N * K);
         float* out = c.output((size_t)M * N);
         c.time([&] { c.be().matmul_forward(out, x, w, M, N, K); });
       }},
      {"matmul_backward", kMatmul,
       {{1, 1, 1}, {7, 13, 29}, {33, 65, 17}, {64, 768, 288}},
       [](Ctx& c, const Dims& d) {
         const int M = d[0], N = d[1], K = d[2];
         float* dout = c.input((size_t)M * N);
         float* x = c.input((size_t)M * K);
         float* w = c.input((size_t)N * K);
         float* dx = c.output((size_t)M * K);
         float* dw = c.output((size_t)N * K, c.values((size_t)N * K, -1, 1));
         c.time([&] { c.be().matmul_backward(dx, dw, dout, x, w, M, N, K); });
       }},
      {"rope", kElementwise,
       // B, T, H, Hkv, D, pos0, inverse[, packed documents]
       {{1, 1, 1, 1, 2, 0, 0}, {2, 7, 3, 1, 6, 5, 0}, {2, 7, 4, 2, 8, 0, 1}, {1, 64, 6, 6, 48, 0, 0},
        {2, 40, 4, 2, 16, 0, 0, 1}, {1, 33, 3, 1, 8, 0, 1, 1}},
       [](Ctx& c, const Dims& d) {
         AttnShape s = attn(d[0], d[1], d[2], d[3], d[4]);
         if (d.size() > 7 && d[7]) s.doc_start = c.ints(doc_starts(s.B, s.T));
         const size_t n = (size_t)s.B * s.T * s.qkv_stride();
         float* qkv = c.output(n, c.values(n, -1, 1));
         c.time([&] { c.be().rope(qkv, s, d[5], 10000.f, d[6] != 0); });
       }},
      {"attention_forward", kMatmul,
       // B, T, H, Hkv, D[, packed documents]
       {{1, 1, 1, 1, 1}, {2, 7, 4, 2, 5}, {1, 33, 3, 1, 16}, {1, 64, 6, 6, 48}, {2, 130, 4, 2, 64},
        {2, 40, 4, 2, 16, 1}, {1, 130, 4, 2, 64, 1}},
       [](Ctx& c, const Dims& d) {
         AttnShape s = attn(d[0], d[1], d[2], d[3], d[4]);
         if (d.size() > 5 && d[5]) s.doc_start = c.ints(doc_starts(s.B, s.T));
         float* qkv = c.input((size_t)s.B * s.T * s.qkv_stride());
         float* out = c.output((size_t)s.B * s.T * s.H * s.D);
         float* lse = c.output((size_t)s.B * s.H * s.T);
         c.time([&] { c.be().attention_forward(out, lse, qkv, s); });
       }},
      {"attention_backward", kMatmul,
       {{1, 1, 1, 1, 1}, {2, 7, 4, 2, 5}, {1, 33, 3, 1, 16}, {1, 64, 6, 6, 48}, {2, 130, 4, 2, 64},
        {2, 40, 4, 2, 16, 1}, {1, 130, 4, 2, 64, 1}},
       [](Ctx& c, const Dims& d) {
         AttnShape s = attn(d[0], d[1], d[2], d[3], d[4]);
         if (d.size() > 5 && d[5]) s.doc_start = c.ints(doc_starts(s.B, s.T));
         const size_t nq = (size_t)s.B * s.T * s.qkv_stride(), no = (size_t)s.B * s.T * s.H * s.D;
         // out and lse from the reference forward definition are not needed: the backward is
         // a function of (dout, qkv, out, lse) and both sides get the same values.
         float* dout = c.input(no);
         float* qkv = c.input(nq);
         float* out = c.input(no);
         float* lse = c.input((size_t)s.B * s.H * s.T, 0.5f, 3.f);
         float* dqkv = c.output(nq);
         c.time([&] { c.be().attention_backward(dqkv, dout, qkv, out, lse, s); });
       }},
      {"swiglu_forward", kElementwise,
       {{1, 1}, {5, 37}, {64, 768}},
       [](Ctx& c, const Dims& d) {
         const int N = d[0], F = d[1];
         float* gu = c.input((size_t)N * 2 * F, -4, 4);
         float* out = c.output((size_t)N * F);
         c.time([&] { c.be().swiglu_forward(out, gu, N, F); });
       }},
      {"swiglu_backward", kElementwise,
       {{1, 1}, {5, 37}, {64, 768}},
       [](Ctx& c, const Dims& d) {
         const int N = d[0], F = d[1];
         float* dout = c.input((size_t)N * F);
         float* gu = c.input((size_t)N * 2 * F, -4, 4);
         float* dgu = c.output((size_t)N * 2 * F);
         c.time([&] { c.be().swiglu_backward(dgu, dout, gu, N, F); });
       }},
      {"add", kElementwise,
       {{1}, {1001}, {64 * 288}},
       [](Ctx& c, const Dims& d) {
         const size_t n = d[0];
         float* a = c.input(n);
         float* b = c.input(n);
         float* out = c.output(n);
         c.time([&] { c.be().add(out, a, b, n); });
       }},
      {"cross_entropy", kReduction,
       {{1, 1}, {5, 17}, {32, 4096}},
       [](Ctx& c, const Dims& d) {
         const int N = d[0], V = d[1];
         float* logits = c.input((size_t)N * V, -6, 6);
         std::vector<int32_t> t = tokens(N, V, 3);
         if (N > 2) t[1] = -1;  // a masked row
         int32_t* tg = c.ints(t);
         float* losses = c.output(N);
         float* dl = c.output((size_t)N * V);
         c.time([&] { c.be().cross_entropy(losses, dl, logits, tg, N, V, 1.f / N); });
       }},
      {"cross_entropy_rows", kReduction,
       {{1, 1}, {5, 17}, {32, 4096}},
       [](Ctx& c, const Dims& d) {
         const int N = d[0], V = d[1];
         float* logits = c.input((size_t)N * V, -6, 6);
         std::vector<int32_t> t = tokens(N, V, 4);
         if (N > 2) t[2] = -1;  // a masked row
         int32_t* tg = c.ints(t);
         float* w = c.input(N, -2, 2);  // advantages of either sign
         float* losses = c.output(N);
         float* ent = c.output(N);
         float* dl = c.output((size_t)N * V);
         c.time([&] { c.be().cross_entropy_rows(losses, ent, dl, logits, tg, w, N, V); });
       }},
      {"adamw", kElementwise,
       // n, t
       {{1, 1}, {1001, 1}, {100000, 10}},
       [](Ctx& c, const Dims& d) {
         const size_t n = d[0];
         float* g = c.input(n);
         float* p = c.output(n, c.values(n, -1, 1));
         float* m = c.output(n, c.values(n, -0.1f, 0.1f));
         float* v = c.output(n, c.values(n, 0.f, 0.01f));
         c.time([&] { c.be().adamw(p, m, v, g, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, d[1]); });
       }},
      {"sum_squares", kReduction,
       {{1}, {1001}, {100000}},
       [](Ctx& c, const Dims& d) {
         float* x = c.input(d[0]);
         double r = 0;
         c.time([&] { r = c.be().sum_squares(x, d[0]); });
         c.scalar(r);
       }},
      {"scale", kElementwise,
       {{1}, {1001}, {100000}},
       [](Ctx& c, const Dims& d) {
         const size_t n = d[0];
         float* x = c.output(n, c.values(n, -1, 1));
         c.time([&] { c.be().scale(x, n, 0.37f); });
       }},
      {"all_finite", kExact,
       {{1}, {1001}, {100000}},
       [](Ctx& c, const Dims& d) {
         float* x = c.input(d[0]);
         bool r = false;
         c.time([&] { r = c.be().all_finite(x, d[0]); });
         c.scalar(r ? 1.0 : 0.0);
       }},
      {"zero", kExact,
       {{1}, {1001}},
       [](Ctx& c, const Dims& d) {
         const size_t n = d[0];
         float* x = c.output(n, c.values(n, -1, 1));
         c.time([&] { c.be().zero(x + n / 3, (n - n / 3) * sizeof(float)); });
       }},
      {"attention_kv_forward", kMatmul,
       // H, Hkv, D, Tmax, pos0, n
       {{1, 1, 4, 8, 0, 1}, {4, 2, 6, 20, 5, 3}, {3, 1, 16, 40, 0, 17}, {6, 6, 48, 128, 60, 8}},
       [](Ctx& c, const Dims& d) {
         const AttnShape s = attn(1, d[3], d[0], d[1], d[2]);
         const int pos0 = d[4], n = d[5];
         const size_t cache = (size_t)d[3] * s.Hkv * s.D;
         float* qkv = c.input((size_t)n * s.qkv_stride());
         float* kc = c.output(cache, c.values(cache, -1, 1));
         float* vc = c.output(cache, c.values(cache, -1, 1));
         float* out = c.output((size_t)n * s.H * s.D);
         c.time([&] { c.be().attention_kv_forward(out, kc, vc, qkv, s, pos0, n); });
       }},
      {"rope_batch", kElementwise,
       // H, Hkv, D
       {{1, 1, 2}, {4, 2, 6}, {6, 6, 48}},
       [](Ctx& c, const Dims& d) {
         const Batch3 b;
         const AttnShape s = attn(1, b.tmax(), d[0], d[1], d[2]);
         const size_t n = (size_t)b.rows() * s.qkv_stride();
         float* qkv = c.output(n, c.values(n, -1, 1));
         c.time([&] { c.be().rope_batch(qkv, s, b.kv(0), 10000.f); });
       }},
      {"attention_kv_batch", kMatmul,
       // H, Hkv, D
       {{1, 1, 4}, {4, 2, 6}, {6, 6, 48}},
       [](Ctx& c, const Dims& d) {
         const Batch3 b;
         const AttnShape s = attn(1, b.tmax(), d[0], d[1], d[2]);
         const size_t stride = (size_t)b.tmax() * s.Hkv * s.D, cache = 3 * stride;
         float* qkv = c.input((size_t)b.rows() * s.qkv_stride());
         float* kc = c.output(cache, c.values(cache, -1, 1));
         float* vc = c.output(cache, c.values(cache, -1, 1));
         float* out = c.output((size_t)b.rows() * s.H * s.D);
         c.time([&] { c.be().attention_kv_batch(out, kc, vc, qkv, s, b.kv(stride)); });
       }},
      {"wmatmul_forward", kMatmul,
       // M, N, K, type (0 f32, 1 q8, 2 q4)
       {{1, 1, 32, 0}, {5, 17, 96, 0}, {16, 4096, 288, 0}, {1, 1, 32, 1}, {5, 17, 96, 1},
        {16, 4096, 288, 1}, {1, 1, 32, 2}, {5, 17, 96, 2}, {16, 768, 288, 2}},
       [](Ctx& c, const Dims& d) {
         const int M = d[0], N = d[1], K = d[2];
         const WType t = static_cast<WType>(d[3]);
         const std::vector<float> host = c.values((size_t)N * K, -0.2f, 0.2f);
         WMatrix w{t, N, K, nullptr, nullptr};
         if (t == WType::F32) {
           w.data = c.input(pack_f32(host.data(), N, K));
         } else {
           const PackedQuant q = pack_quant(quantize_matrix(host.data(), N, K, t));
           std::vector<float> bytes((q.data.size() + 3) / 4);
           std::memcpy(bytes.data(), q.data.data(), q.data.size());
           w.data = c.input(bytes);
           w.scale = c.input(q.scale);
         }
         float* x = c.input((size_t)M * K);
         float* out = c.output((size_t)M * N);
         std::vector<float> scratch_init(wmatmul_scratch_bytes(M, K) / 4 + 1);
         float* scratch = c.input(scratch_init);
         c.time([&] { c.be().wmatmul_forward(out, x, w, M, scratch); });
       },
       3},
  };
  return cases;
}

}  // namespace tandem::conformance
