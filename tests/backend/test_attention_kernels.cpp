// Kernel tests for the attention path: rotate-half RoPE (forward, inverse), causal grouped-query
// attention (forward against a double reference, backward against finite differences), and
// attention over a KV cache checked against full-sequence attention.
#include <cmath>

#include "kernel_test_util.h"

namespace tandem::test {
namespace {

std::string label(const AttnShape& s) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " H=" + std::to_string(s.H) +
         " Hkv=" + std::to_string(s.Hkv) + " D=" + std::to_string(s.D);
}

size_t qkv_size(const AttnShape& s) { return static_cast<size_t>(s.B) * s.T * s.qkv_stride(); }

// ---- rope ------------------------------------------------------------------------------------

// Hugging Face rotate-half on the q heads and k heads of each row (they sit side by side at
// the start of the row); v is left alone. inverse rotates by the negative angle.
std::vector<double> ref_rope(std::vector<double> qkv, const AttnShape& s, int pos0, double theta,
                             bool inverse) {
  const int D = s.D, half = D / 2, stride = s.qkv_stride();
  for (int b = 0; b < s.B; ++b)
    for (int t = 0; t < s.T; ++t) {
      double* row = qkv.data() + (static_cast<size_t>(b) * s.T + t) * stride;
      const double pos = pos0 + t;
      for (int head = 0; head < s.H + s.Hkv; ++head) {
        double* x = row + head * D;
        for (int i = 0; i < half; ++i) {
          double angle = pos * std::pow(theta, -2.0 * i / D);
          if (inverse) angle = -angle;
          double c = std::cos(angle), sn = std::sin(angle);
          double x1 = x[i], x2 = x[i + half];
          x[i] = x1 * c - x2 * sn;
          x[i + half] = x2 * c + x1 * sn;
        }
      }
    }
  return qkv;
}

struct RopeCase {
  AttnShape s;
  int pos0;
  float theta;
};
const RopeCase kRopeCases[] = {{{2, 5, 4, 2, 6}, 0, 10000.f},    {{2, 5, 4, 2, 6}, 37, 10000.f},
                               {{1, 1, 3, 1, 8}, 11, 10000.f},   {{3, 7, 3, 1, 2}, 3, 10000.f},
                               {{1, 16, 4, 4, 64}, 5, 500000.f}, {{2, 9, 6, 2, 16}, 0, 10000.f}};

std::string label(const RopeCase& c) {
  return label(c.s) + " pos0=" + std::to_string(c.pos0) + " theta=" + std::to_string(c.theta);
}

// The v part of every row is bit-identical between a and b.
::testing::AssertionResult v_untouched(const std::vector<float>& a, const std::vector<float>& b,
                                       const AttnShape& s) {
  const size_t stride = s.qkv_stride(), v0 = static_cast<size_t>(s.H + s.Hkv) * s.D;
  for (size_t r = 0; r < a.size() / stride; ++r)
    for (size_t i = v0; i < stride; ++i)
      if (std::memcmp(&a[r * stride + i], &b[r * stride + i], sizeof(float)) != 0)
        return ::testing::AssertionFailure() << "v changed at row " << r << " col " << i;
  return ::testing::AssertionSuccess();
}

TEST(Rope, ForwardMatchesReference) {
  for (const auto& c : kRopeCases) {
    SCOPED_TRACE(label(c));
    auto x = uniform(qkv_size(c.s), 400);
    auto want = ref_rope(to_double(x), c.s, c.pos0, c.theta, false);
    DeviceBuf<float> d(x);
    backend().rope(d.get(), c.s, c.pos0, c.theta, false);
    auto got = d.download();
    EXPECT_TRUE(close(got, want, kFwdTol));
    EXPECT_TRUE(v_untouched(got, x, c.s));
    d.upload(x);
    backend().rope(d.get(), c.s, c.pos0, c.theta, false);
    EXPECT_TRUE(bits_equal(got, d.download()));
  }
}

TEST(Rope, InverseMatchesReferenceAndUndoesForward) {
  for (const auto& c : kRopeCases) {
    SCOPED_TRACE(label(c));
    auto x = uniform(qkv_size(c.s), 410);
    DeviceBuf<float> d(x);
    backend().rope(d.get(), c.s, c.pos0, c.theta, true);
    auto inv = d.download();
    EXPECT_TRUE(close(inv, ref_rope(to_double(x), c.s, c.pos0, c.theta, true), kFwdTol));
    EXPECT_TRUE(v_untouched(inv, x, c.s));
    d.upload(x);
    backend().rope(d.get(), c.s, c.pos0, c.theta, true);
    EXPECT_TRUE(bits_equal(inv, d.download()));

    d.upload(x);
    backend().rope(d.get(), c.s, c.pos0, c.theta, false);
    backend().rope(d.get(), c.s, c.pos0, c.theta, true);
    EXPECT_TRUE(close(d.download(), to_double(x), kFwdTol)) << "inverse(forward(x)) != x";
  }
}

TEST(Rope, InverseIsTheBackward) {
  // d/dx sum(rope(x) * R) = rope_inverse(R): the transpose rotation, identity on v.
  for (const auto& c : kRopeCases) {
    SCOPED_TRACE(label(c));
    auto x = uniform(qkv_size(c.s), 420);
    auto R = uniform(qkv_size(c.s), 421);
    auto idx = sample_indices(x.size(), 400, 422);
    auto want = fd_grad(
        [&](const std::vector<double>& v) {
          return dot(ref_rope(v, c.s, c.pos0, c.theta, false), R);
        },
        to_double(x), idx);
    DeviceBuf<float> d(R);
    backend().rope(d.get(), c.s, c.pos0, c.theta, true);
    EXPECT_TRUE(close_at(d.download(), want, idx, kGradTol));
  }
}

// ---- attention --------------------------------------------------------------------------------

// Causal grouped-query attention in double; lse is (B, H, T).
std::vector<double> ref_attention(const std::vector<double>& qkv, const AttnShape& s,
                                  std::vector<double>* lse = nullptr) {
  const int D = s.D, stride = s.qkv_stride(), group = s.H / s.Hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> out(static_cast<size_t>(s.B) * s.T * s.H * D, 0.0);
  if (lse) lse->assign(static_cast<size_t>(s.B) * s.H * s.T, 0.0);
  std::vector<double> score(s.T);
  for (int b = 0; b < s.B; ++b)
    for (int t = 0; t < s.T; ++t)
      for (int h = 0; h < s.H; ++h) {
        const double* q = qkv.data() + (static_cast<size_t>(b) * s.T + t) * stride + h * D;
        const int kvh = h / group;
        double mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          const double* k =
              qkv.data() + (static_cast<size_t>(b) * s.T + j) * stride + s.H * D + kvh * D;
          double dotqk = 0;
          for (int d = 0; d < D; ++d) dotqk += q[d] * k[d];
          score[j] = dotqk * scale;
          mx = std::max(mx, score[j]);
        }
        double sum = 0;
        for (int j = 0; j <= t; ++j) sum += std::exp(score[j] - mx);
        double* o = out.data() + ((static_cast<size_t>(b) * s.T + t) * s.H + h) * D;
        for (int j = 0; j <= t; ++j) {
          const double p = std::exp(score[j] - mx) / sum;
          const double* v = qkv.data() + (static_cast<size_t>(b) * s.T + j) * stride +
                            (s.H + s.Hkv) * D + kvh * D;
          for (int d = 0; d < D; ++d) o[d] += p * v[d];
        }
        if (lse) (*lse)[(static_cast<size_t>(b) * s.H + h) * s.T + t] = mx + std::log(sum);
      }
  return out;
}

// Odd sizes, T=1, grouped (H/Hkv = 2, 3, 4), multi-head (Hkv = H), and longer sequences that
// reach any tiling of the key loop (150: two full 64-row tiles and a partial one, at the
// models' head dimension 64).
const AttnShape kAttnShapes[] = {{2, 5, 4, 2, 6},    {1, 1, 3, 1, 8},    {1, 7, 3, 1, 6},
                                 {2, 3, 2, 2, 4},    {1, 13, 4, 1, 5},   {2, 67, 4, 2, 16},
                                 {1, 130, 2, 1, 32}, {2, 150, 4, 2, 64}, {1, 100, 2, 1, 48}};

TEST(Attention, ForwardMatchesReference) {
  for (const auto& s : kAttnShapes) {
    SCOPED_TRACE(label(s));
    auto qkv = uniform(qkv_size(s), 500, -1.5f, 1.5f);
    std::vector<double> lse_ref;
    auto want = ref_attention(to_double(qkv), s, &lse_ref);
    DeviceBuf<float> d_qkv(qkv), d_out(want.size()), d_lse(lse_ref.size());
    d_out.fill(kGarbage);
    d_lse.fill(kGarbage);
    backend().attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), s);
    auto out = d_out.download();
    auto lse = d_lse.download();
    EXPECT_TRUE(close(out, want, kGemmTol)) << "out";
    EXPECT_TRUE(close(lse, lse_ref, kGemmTol)) << "lse";
    backend().attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), s);
    EXPECT_TRUE(bits_equal(out, d_out.download()));
    EXPECT_TRUE(bits_equal(lse, d_lse.download()));
  }
}

TEST(Attention, FirstTokenSeesOnlyItself) {
  // Causality made concrete: the output at t=0 is exactly its own v (one key, weight 1),
  // whatever the later tokens hold; and lse at t=0 is its own scaled score.
  const AttnShape s{1, 4, 2, 1, 4};
  auto qkv = uniform(qkv_size(s), 510, -1.f, 1.f);
  for (size_t i = s.qkv_stride(); i < qkv.size(); ++i) qkv[i] *= 100.f;  // loud future
  DeviceBuf<float> d_qkv(qkv), d_out(static_cast<size_t>(s.T) * s.H * s.D), d_lse(s.H * s.T);
  backend().attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), s);
  auto out = d_out.download();
  const float* v0 = qkv.data() + (s.H + s.Hkv) * s.D;
  for (int h = 0; h < s.H; ++h)
    for (int d = 0; d < s.D; ++d) EXPECT_NEAR(out[h * s.D + d], v0[d], 1e-6) << "h=" << h;
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  for (const auto& s : kAttnShapes) {
    SCOPED_TRACE(label(s));
    const size_t n = qkv_size(s);
    const size_t n_out = static_cast<size_t>(s.B) * s.T * s.H * s.D;
    auto qkv = uniform(n, 520, -1.5f, 1.5f);
    auto R = uniform(n_out, 521);
    // Sample the inputs on the long shapes so the double reference stays cheap.
    const size_t cost = static_cast<size_t>(s.B) * s.T * s.T * s.H * s.D;
    auto idx = sample_indices(n, std::clamp<size_t>(200'000'000 / cost, 100, 2000), 522);
    auto want = fd_grad([&](const std::vector<double>& v) { return dot(ref_attention(v, s), R); },
                        to_double(qkv), idx);

    DeviceBuf<float> d_qkv(qkv), d_out(n_out), d_lse(static_cast<size_t>(s.B) * s.H * s.T);
    DeviceBuf<float> d_dout(R), d_dqkv(n);
    backend().attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), s);
    d_dqkv.fill(kGarbage);
    backend().attention_backward(d_dqkv.get(), d_dout.get(), d_qkv.get(), d_out.get(), d_lse.get(),
                                 s);
    auto got = d_dqkv.download();
    EXPECT_TRUE(close_at(got, want, idx, kGradTol)) << "dqkv";
    // Each part on its own, so a wrong (or unwritten) q, k or v block is named.
    const int stride = s.qkv_stride();
    const int parts[4] = {0, s.H * s.D, (s.H + s.Hkv) * s.D, stride};
    const char* names[3] = {"dq", "dk", "dv"};
    for (int p = 0; p < 3; ++p) {
      std::vector<size_t> sub;
      for (size_t i : idx)
        if (static_cast<int>(i % stride) >= parts[p] && static_cast<int>(i % stride) < parts[p + 1])
          sub.push_back(i);
      EXPECT_TRUE(close_at(got, want, sub, kGradTol)) << names[p];
    }

    d_dqkv.fill(kGarbage);
    backend().attention_backward(d_dqkv.get(), d_dout.get(), d_qkv.get(), d_out.get(), d_lse.get(),
                                 s);
    EXPECT_TRUE(bits_equal(got, d_dqkv.download()));
  }
}

TEST(Attention, BackwardWritesEveryEntry) {
  // With dout = 0 every gradient is zero; garbage left anywhere means an entry was skipped.
  for (const auto& s : kAttnShapes) {
    SCOPED_TRACE(label(s));
    const size_t n = qkv_size(s), n_out = static_cast<size_t>(s.B) * s.T * s.H * s.D;
    DeviceBuf<float> d_qkv(uniform(n, 530)), d_out(n_out), d_dout(n_out), d_dqkv(n);
    DeviceBuf<float> d_lse(static_cast<size_t>(s.B) * s.H * s.T);
    backend().attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), s);
    d_dqkv.fill(kGarbage);
    backend().attention_backward(d_dqkv.get(), d_dout.get(), d_qkv.get(), d_out.get(), d_lse.get(),
                                 s);
    EXPECT_TRUE(close(d_dqkv.download(), std::vector<double>(n, 0.0), 0.0));
  }
}

TEST(Attention, NanReachesOnlyWhatDependsOnIt) {
  // Causality for non-finite values: a NaN in the value of token j (or in the output gradient
  // of token t) must reach exactly the outputs (gradients) that depend on it, never through a
  // masked weight of zero (0 * NaN). j and t sit inside a 64-row block, with rows of the same
  // block on both sides.
  const AttnShape s{1, 100, 2, 1, 64};
  const int stride = s.qkv_stride(), HD = s.H * s.D, j = 70, t = 75;
  const size_t n = qkv_size(s), n_out = static_cast<size_t>(s.T) * HD;
  auto qkv = uniform(n, 540, -1.f, 1.f);
  qkv[static_cast<size_t>(j) * stride + (s.H + s.Hkv) * s.D + 3] = NAN;  // v_j
  DeviceBuf<float> d_qkv(qkv), d_out(n_out), d_lse(static_cast<size_t>(s.H) * s.T);
  backend().attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), s);
  auto out = d_out.download();
  for (int r = 0; r < s.T; ++r)
    EXPECT_EQ(std::isnan(out[static_cast<size_t>(r) * HD + 3]), r >= j) << "output row " << r;

  // Backward from clean inputs, with a NaN in dout at token t: dV and dK of keys after t stay
  // finite, those at or before t do not; dQ rows before t stay finite.
  qkv = uniform(n, 541, -1.f, 1.f);
  auto dout = uniform(n_out, 542);
  dout[static_cast<size_t>(t) * HD + 5] = NAN;
  DeviceBuf<float> d_q2(qkv), d_dout(dout), d_dqkv(n);
  backend().attention_forward(d_out.get(), d_lse.get(), d_q2.get(), s);
  backend().attention_backward(d_dqkv.get(), d_dout.get(), d_q2.get(), d_out.get(), d_lse.get(),
                               s);
  auto g = d_dqkv.download();
  for (int r = 0; r < s.T; ++r) {
    const float* row = g.data() + static_cast<size_t>(r) * stride;
    bool dq_nan = false, dk_nan = false, dv_nan = false;
    for (int d = 0; d < HD; ++d) dq_nan |= std::isnan(row[d]);
    for (int d = 0; d < s.D; ++d) {
      dk_nan |= std::isnan(row[HD + d]);
      dv_nan |= std::isnan(row[HD + s.Hkv * s.D + d]);
    }
    EXPECT_EQ(dv_nan, r <= t) << "dv row " << r;
    EXPECT_EQ(dk_nan, r <= t) << "dk row " << r;
    if (r < t) {
      EXPECT_FALSE(dq_nan) << "dq row " << r;
    }
  }
}

// ---- attention over a KV cache ------------------------------------------------------------------

struct KvCase {
  int H, Hkv, D, T, Tmax;
  std::vector<int> chunks;  // new tokens per call; they add up to T
};

TEST(AttentionKv, ChunkedMatchesFullSequence) {
  const KvCase cases[] = {{4, 2, 6, 11, 16, {3, 1, 4, 1, 2}},
                          {3, 1, 8, 9, 9, {1, 1, 1, 1, 1, 1, 1, 1, 1}},
                          {4, 4, 32, 40, 64, {40}},
                          {8, 2, 16, 37, 48, {17, 1, 1, 18}}};
  const float kCacheGarbage = 50.f;  // never-written cache slots must never be read
  for (const auto& c : cases) {
    const AttnShape full{1, c.T, c.H, c.Hkv, c.D};
    // B=1; T is the cache capacity Tmax (the caches are (Tmax, Hkv, D)).
    const AttnShape kv{1, c.Tmax, c.H, c.Hkv, c.D};
    SCOPED_TRACE(label(full) + " Tmax=" + std::to_string(c.Tmax));
    const int stride = full.qkv_stride(), HD = c.H * c.D, KD = c.Hkv * c.D;
    auto qkv = uniform(qkv_size(full), 600, -1.5f, 1.5f);
    auto want = ref_attention(to_double(qkv), full);

    DeviceBuf<float> d_qkv(qkv), d_full(want.size()), d_lse(static_cast<size_t>(c.H) * c.T);
    backend().attention_forward(d_full.get(), d_lse.get(), d_qkv.get(), full);
    auto out_full = d_full.download();

    std::vector<float> runs[2], kcache, vcache;
    for (auto& got : runs) {
      DeviceBuf<float> d_k(static_cast<size_t>(c.Tmax) * KD), d_v(static_cast<size_t>(c.Tmax) * KD);
      d_k.fill(kCacheGarbage);
      d_v.fill(kCacheGarbage);
      int pos = 0;
      for (int n : c.chunks) {
        std::vector<float> chunk(qkv.begin() + static_cast<size_t>(pos) * stride,
                                 qkv.begin() + static_cast<size_t>(pos + n) * stride);
        DeviceBuf<float> d_chunk(chunk), d_out(static_cast<size_t>(n) * HD);
        d_out.fill(kGarbage);
        backend().attention_kv_forward(d_out.get(), d_k.get(), d_v.get(), d_chunk.get(), kv, pos,
                                       n);
        auto out = d_out.download();
        got.insert(got.end(), out.begin(), out.end());
        pos += n;
      }
      kcache = d_k.download();
      vcache = d_v.download();
    }
    EXPECT_TRUE(close(runs[0], want, kGemmTol)) << "against the double reference";
    EXPECT_TRUE(close(runs[0], to_double(out_full), kGemmTol)) << "against attention_forward";
    EXPECT_TRUE(bits_equal(runs[0], runs[1])) << "not deterministic";

    // The caches hold each token's k and v at its position; later slots are untouched.
    std::vector<float> want_k(static_cast<size_t>(c.Tmax) * KD, kCacheGarbage), want_v = want_k;
    for (int t = 0; t < c.T; ++t)
      for (int i = 0; i < KD; ++i) {
        want_k[static_cast<size_t>(t) * KD + i] = qkv[static_cast<size_t>(t) * stride + HD + i];
        want_v[static_cast<size_t>(t) * KD + i] =
            qkv[static_cast<size_t>(t) * stride + HD + KD + i];
      }
    EXPECT_TRUE(bits_equal(kcache, want_k)) << "kcache";
    EXPECT_TRUE(bits_equal(vcache, want_v)) << "vcache";
  }
}

// How a sequence's tokens are split into calls never changes its bits: a prompt of 70 tokens
// in one call (the CPU's prompt path: a head over blocks of rows), one token per call (the
// decode path: a row over all heads), and mixed chunks give bit-identical outputs, for every
// head width the vector kernels have and one they do not (the serving scheduler splits
// prompts by its token budget, so this is what keeps a request's result independent of load).
TEST(AttentionKv, ChunkingNeverChangesTheBits) {
  for (int D : {16, 48, 64, 128, 24}) {
    const int H = 4, Hkv = 2, T = 70, Tmax = 80;
    const AttnShape full{1, T, H, Hkv, D}, kv{1, Tmax, H, Hkv, D};
    SCOPED_TRACE("D=" + std::to_string(D));
    const int stride = full.qkv_stride(), HD = H * D, KD = Hkv * D;
    auto qkv = uniform(qkv_size(full), 700 + D, -1.5f, 1.5f);
    const std::vector<std::vector<int>> splits = {{70}, std::vector<int>(70, 1), {17, 16, 37},
                                                  {3, 40, 27}};
    std::vector<std::vector<float>> outs;
    for (const auto& chunks : splits) {
      DeviceBuf<float> d_k(static_cast<size_t>(Tmax) * KD), d_v(static_cast<size_t>(Tmax) * KD);
      std::vector<float> got;
      int pos = 0;
      for (int n : chunks) {
        std::vector<float> chunk(qkv.begin() + static_cast<size_t>(pos) * stride,
                                 qkv.begin() + static_cast<size_t>(pos + n) * stride);
        DeviceBuf<float> d_chunk(chunk), d_out(static_cast<size_t>(n) * HD);
        backend().attention_kv_forward(d_out.get(), d_k.get(), d_v.get(), d_chunk.get(), kv, pos,
                                       n);
        auto out = d_out.download();
        got.insert(got.end(), out.begin(), out.end());
        pos += n;
      }
      outs.push_back(got);
    }
    EXPECT_TRUE(close(outs[0], ref_attention(to_double(qkv), full), kGemmTol));
    for (size_t i = 1; i < outs.size(); ++i)
      EXPECT_TRUE(bits_equal(outs[0], outs[i])) << "split " << i;
  }
}

// The batched kernels give each sequence exactly what the one-sequence kernels give it: three
// sequences in different slots, at different positions, with 1 to 5 new tokens each.
TEST(AttentionKv, BatchEqualsOneSequenceAtATimeBitForBit) {
  const int H = 4, Hkv = 2, D = 8, Tmax = 24, slots = 4;
  const AttnShape kv{1, Tmax, H, Hkv, D};
  const int stride = kv.qkv_stride(), KD = Hkv * D, HD = H * D;
  const size_t slot_floats = static_cast<size_t>(Tmax) * KD;
  // Sequence i: slot, tokens already cached (its history), new tokens this step.
  const std::vector<int32_t> slot = {2, 0, 3}, pos0 = {5, 0, 11}, n = {1, 5, 2};
  std::vector<int32_t> row0 = {0, 1, 6};
  const int rows = 8;
  auto history = uniform(static_cast<size_t>(slots) * Tmax * stride, 610, -1.f, 1.f);
  auto fresh = uniform(static_cast<size_t>(rows) * stride, 611, -1.f, 1.f);
  // One at a time: rope then attention per sequence, after filling its history.
  std::vector<float> want_out(static_cast<size_t>(rows) * HD), want_k, want_v;
  {
    DeviceBuf<float> d_k(slots * slot_floats), d_v(slots * slot_floats);
    d_k.fill(7.f);
    d_v.fill(7.f);
    for (size_t i = 0; i < slot.size(); ++i) {
      const AttnShape one{1, n[i], H, Hkv, D};
      float* kc = d_k.get() + slot[i] * slot_floats;
      float* vc = d_v.get() + slot[i] * slot_floats;
      if (pos0[i] > 0) {
        std::vector<float> h(history.begin() + static_cast<size_t>(slot[i]) * Tmax * stride,
                             history.begin() + (static_cast<size_t>(slot[i]) * Tmax + pos0[i]) * stride);
        DeviceBuf<float> d_h(h), d_o(static_cast<size_t>(pos0[i]) * HD);
        const AttnShape hs{1, pos0[i], H, Hkv, D};
        backend().rope(d_h.get(), hs, 0, 10000.f, false);
        backend().attention_kv_forward(d_o.get(), kc, vc, d_h.get(), hs, 0, pos0[i]);
      }
      std::vector<float> q(fresh.begin() + static_cast<size_t>(row0[i]) * stride,
                           fresh.begin() + static_cast<size_t>(row0[i] + n[i]) * stride);
      DeviceBuf<float> d_q(q), d_o(static_cast<size_t>(n[i]) * HD);
      backend().rope(d_q.get(), one, pos0[i], 10000.f, false);
      backend().attention_kv_forward(d_o.get(), kc, vc, d_q.get(), one, pos0[i], n[i]);
      auto o = d_o.download();
      std::copy(o.begin(), o.end(), want_out.begin() + static_cast<size_t>(row0[i]) * HD);
    }
    want_k = d_k.download();
    want_v = d_v.download();
  }
  // Batched: the same histories, then one rope_batch and one attention_kv_batch.
  DeviceBuf<float> d_k(slots * slot_floats), d_v(slots * slot_floats);
  d_k.fill(7.f);
  d_v.fill(7.f);
  for (size_t i = 0; i < slot.size(); ++i) {
    if (pos0[i] == 0) continue;
    std::vector<float> h(history.begin() + static_cast<size_t>(slot[i]) * Tmax * stride,
                         history.begin() + (static_cast<size_t>(slot[i]) * Tmax + pos0[i]) * stride);
    DeviceBuf<float> d_h(h), d_o(static_cast<size_t>(pos0[i]) * HD);
    const AttnShape hs{1, pos0[i], H, Hkv, D};
    backend().rope(d_h.get(), hs, 0, 10000.f, false);
    backend().attention_kv_forward(d_o.get(), d_k.get() + slot[i] * slot_floats,
                                   d_v.get() + slot[i] * slot_floats, d_h.get(), hs, 0, pos0[i]);
  }
  KvBatch b{slot.data(), pos0.data(), n.data(), row0.data(), 3, slot_floats};
  DeviceBuf<float> d_fresh(fresh), d_out(static_cast<size_t>(rows) * HD);
  backend().rope_batch(d_fresh.get(), kv, b, 10000.f);
  backend().attention_kv_batch(d_out.get(), d_k.get(), d_v.get(), d_fresh.get(), kv, b);
  EXPECT_TRUE(bits_equal(d_out.download(), want_out)) << "attention output";
  EXPECT_TRUE(bits_equal(d_k.download(), want_k)) << "kcache";
  EXPECT_TRUE(bits_equal(d_v.download(), want_v)) << "vcache";
}

// Packed rows (AttnShape::doc_start): rope, attention forward and backward of each document
// of a row equal those of the document alone in a row of its own, over rows longer than a
// kernel block (documents crossing blocks), and a non-finite value in one document does not
// reach the others.
TEST(Attention, PackedDocumentsMatchEachDocumentAlone) {
  const int H = 4, Hkv = 2, D = 16, T = 150;
  const std::vector<int> lens = {70, 1, 45, 30, 4};  // 150 positions in one row
  const AttnShape s{1, T, H, Hkv, D};
  const int stride = s.qkv_stride(), HD = H * D;
  std::vector<int32_t> ds(T);
  std::vector<int> start;
  for (int t = 0, k = 0, off = 0; k < (int)lens.size(); off += lens[(size_t)k++]) {
    start.push_back(off);
    for (int i = 0; i < lens[(size_t)k]; ++i) ds[(size_t)t++] = off;
  }
  for (bool poison : {false, true}) {
    SCOPED_TRACE(poison ? "a NaN in document 1" : "finite");
    auto qkv = uniform((size_t)T * stride, 530, -1.5f, 1.5f);
    auto dout = uniform((size_t)T * HD, 531);
    if (poison) qkv[(size_t)start[1] * stride + H * D] = NAN;  // document 1's key
    DeviceBuf<int32_t> d_ds(ds);
    AttnShape ps = s;
    ps.doc_start = d_ds.get();
    DeviceBuf<float> d_qkv(qkv), d_out((size_t)T * HD), d_lse((size_t)H * T),
        d_dqkv((size_t)T * stride), d_dout(dout);
    backend().rope(d_qkv.get(), ps, 0, 10000.f, false);
    backend().attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), ps);
    backend().attention_backward(d_dqkv.get(), d_dout.get(), d_qkv.get(), d_out.get(),
                                 d_lse.get(), ps);
    const auto out = d_out.download(), dqkv = d_dqkv.download();
    for (size_t k = 0; k < lens.size(); ++k) {
      if (poison && k == 1) continue;
      SCOPED_TRACE("document " + std::to_string(k));
      const int n = lens[k], o = start[k];
      const AttnShape one{1, n, H, Hkv, D};
      std::vector<float> q1(qkv.begin() + (size_t)o * stride, qkv.begin() + (size_t)(o + n) * stride);
      std::vector<float> g1(dout.begin() + (size_t)o * HD, dout.begin() + (size_t)(o + n) * HD);
      DeviceBuf<float> e_qkv(q1), e_out((size_t)n * HD), e_lse((size_t)H * n),
          e_dqkv((size_t)n * stride), e_dout(g1);
      backend().rope(e_qkv.get(), one, 0, 10000.f, false);
      backend().attention_forward(e_out.get(), e_lse.get(), e_qkv.get(), one);
      backend().attention_backward(e_dqkv.get(), e_dout.get(), e_qkv.get(), e_out.get(),
                                   e_lse.get(), one);
      const auto want_out = e_out.download(), want_dqkv = e_dqkv.download();
      std::vector<float> got_out(out.begin() + (size_t)o * HD, out.begin() + (size_t)(o + n) * HD);
      std::vector<float> got_dqkv(dqkv.begin() + (size_t)o * stride,
                                  dqkv.begin() + (size_t)(o + n) * stride);
      EXPECT_TRUE(close(got_out, to_double(want_out), 1e-5)) << "output";
      EXPECT_TRUE(close(got_dqkv, to_double(want_dqkv), 1e-4)) << "dqkv";
    }
  }
}

}  // namespace
}  // namespace tandem::test
