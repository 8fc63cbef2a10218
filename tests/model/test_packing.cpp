// Packed rows: several sequences in one row, attention kept within each (AttnShape::doc_start)
// and positions restarted, give the loss and every gradient of the same sequences one per row
// (the plain causal path, itself checked against PyTorch), to 1e-5 relative.
#include <gtest/gtest.h>

#include <cmath>

#include "model_test_util.h"
#include "tandem/core/rng.h"

namespace tandem::test {
namespace {

struct Result {
  double loss = 0;
  std::vector<float> grads;
};

Result step(Llama& m, const std::vector<int32_t>& in, const std::vector<int32_t>& tg, int B, int T,
            const int32_t* doc_start) {
  m.zero_grads();
  m.forward(in.data(), B, T, doc_start);
  Result r;
  r.loss = m.loss(tg.data(), 1.0f, true);
  m.backward();
  r.grads.resize(m.num_params());
  m.backend().to_host(r.grads.data(), m.grads(), r.grads.size() * sizeof(float));
  return r;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return std::sqrt(num / den);
}

TEST(Packing, PackedRowsGiveTheLossAndGradientsOfUnpackedOnes) {
  for (const ModelCase& mc : model_cases()) {
    SCOPED_TRACE(mc.name);
    auto be = make_backend("cpu", 2);
    Llama m(mc.cfg, *be);
    init_test_weights(m, 21);
    // Six sequences of 5, 9, 3, 12, 7 and 4 tokens; a few targets masked.
    const std::vector<int> lens = {5, 9, 3, 12, 7, 4};
    std::vector<std::vector<int32_t>> seqs;
    for (size_t i = 0; i < lens.size(); ++i) {
      std::vector<int32_t> s;
      for (int t = 0; t < lens[i]; ++t)
        s.push_back((int32_t)(rng_u64(77, i, (uint64_t)t) % mc.cfg.vocab_size));
      seqs.push_back(s);
    }
    auto target = [&](size_t i, int t) {  // target of input position t of sequence i
      return (t + 1) % 4 == 3 ? -1 : seqs[i][(size_t)t + 1];
    };
    // Unpacked: one sequence per row of 12 positions.
    const int Tu = 12, Bu = (int)seqs.size();
    std::vector<int32_t> in_u((size_t)Bu * Tu, 0), tg_u((size_t)Bu * Tu, -1);
    for (size_t i = 0; i < seqs.size(); ++i)
      for (int t = 0; t + 1 < lens[i]; ++t) {
        in_u[i * Tu + t] = seqs[i][(size_t)t];
        tg_u[i * Tu + t] = target(i, t);
      }
    // Packed into rows of 16 positions: {0, 1, 2}, {3}, {4, 5}, padding after each.
    const int Tp = 16, Bp = 3;
    const std::vector<std::vector<size_t>> rows = {{0, 1, 2}, {3}, {4, 5}};
    std::vector<int32_t> in_p((size_t)Bp * Tp, 0), tg_p((size_t)Bp * Tp, -1), ds((size_t)Bp * Tp);
    for (int r = 0; r < Bp; ++r) {
      int off = 0;
      for (size_t i : rows[(size_t)r]) {
        for (int t = 0; t + 1 < lens[i]; ++t) {
          in_p[(size_t)r * Tp + off + t] = seqs[i][(size_t)t];
          tg_p[(size_t)r * Tp + off + t] = target(i, t);
          ds[(size_t)r * Tp + off + t] = off;
        }
        off += lens[i] - 1;
      }
      for (int t = off; t < Tp; ++t) ds[(size_t)r * Tp + t] = off;
    }
    const Result u = step(m, in_u, tg_u, Bu, Tu, nullptr);
    const Result p = step(m, in_p, tg_p, Bp, Tp, ds.data());
    EXPECT_NEAR(p.loss, u.loss, 1e-5 * std::fabs(u.loss));
    EXPECT_LE(rel(p.grads, u.grads), 1e-5);
    // Without the document boundaries the packed sequences see each other: not the same.
    const Result leak = step(m, in_p, tg_p, Bp, Tp, nullptr);
    EXPECT_GT(std::fabs(leak.loss - u.loss), 1e-3 * std::fabs(u.loss));
  }
}

}  // namespace
}  // namespace tandem::test
