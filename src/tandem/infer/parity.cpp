// run_parity: both models see the same token windows (teacher forcing along the reference's
// own greedy continuation, then validation windows); divergences are computed in double from
// log-softmax of each model's logits.
#include "tandem/infer/parity.h"

#include <algorithm>
#include <cmath>

#include "tandem/infer/sampler.h"

namespace tandem {

std::vector<std::string> default_parity_prompts() {
  return {"In the beginning",
          "And it came to pass, when",
          "The quick brown fox jumps over the lazy dog.",
          "Once upon a time, there was a",
          "Blessed are they that",
          "The capital of France is",
          "def fibonacci(n):\n    ",
          "1, 2, 3, 4, 5,",
          "Question: What is the meaning of life?\nAnswer:",
          "And he said unto them,"};
}

namespace {

void log_softmax(const float* x, int n, std::vector<double>& out) {
  out.resize(n);
  double mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, (double)x[i]);
  double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp((double)x[i] - mx);
  const double lse = mx + std::log(s);
  for (int i = 0; i < n; ++i) out[i] = (double)x[i] - lse;
}

struct Accum {
  int64_t n = 0, top1 = 0;
  double kld = 0, max_kld = 0;
  std::vector<double> lp, lq;
  // Compares one position; returns the candidate's log-probability of `target` (if >= 0) via
  // *nll_q and the reference's via *nll_p.
  void add(const float* p, const float* q, int V, int32_t target, double* nll_p, double* nll_q) {
    log_softmax(p, V, lp);
    log_softmax(q, V, lq);
    double k = 0;
    int ap = 0, aq = 0;
    for (int i = 0; i < V; ++i) {
      k += std::exp(lp[i]) * (lp[i] - lq[i]);
      if (lp[i] > lp[ap]) ap = i;
      if (lq[i] > lq[aq]) aq = i;
    }
    k = std::max(k, 0.0);
    kld += k;
    max_kld = std::max(max_kld, k);
    top1 += ap == aq;
    ++n;
    if (target >= 0) {
      *nll_p -= lp[target];
      *nll_q -= lq[target];
    }
  }
};

// Logits for every position of `tokens` (one sequence from position 0).
const float* all_logits(BatchEngine& e, const std::vector<int32_t>& tokens) {
  e.reset(0);
  BatchEngine::Item it{0, tokens.data(), (int)tokens.size(), true};
  return e.step({&it, 1});
}

// Greedy continuation of `prompt` by n tokens (fewer at EOS or the context end).
std::vector<int32_t> greedy(BatchEngine& e, const std::vector<int32_t>& prompt, int n, int eos) {
  e.reset(0);
  const int V = e.model().config().vocab_size;
  std::vector<int32_t> out;
  BatchEngine::Item it{0, prompt.data(), (int)prompt.size(), false};
  const float* lg = e.step({&it, 1});
  std::vector<float> row(V);
  int32_t next;
  while ((int)out.size() < n) {
    row.assign(lg, lg + V);
    next = argmax(row);
    if (next == eos) break;
    out.push_back(next);
    if (e.position(0) >= e.options().max_seq) break;
    it = {0, &out.back(), 1, false};
    lg = e.step({&it, 1});
  }
  return out;
}

}  // namespace

ParityReport run_parity(InferModel& ref, InferModel& cand, const Tokenizer& tok,
                        const ShardReader* val, const ParityOptions& opt) {
  const ModelConfig& c = ref.config();
  const int V = c.vocab_size, T = c.context;
  EngineOptions eo{1, T, T, T};
  BatchEngine er(ref, eo), ec(cand, eo);
  ParityReport rep;
  Accum acc;
  double unused_p = 0, unused_q = 0;
  const auto prompts = opt.prompts.empty() ? default_parity_prompts() : opt.prompts;
  double agree = 0;
  for (const std::string& text : prompts) {
    std::vector<int32_t> p = {tok.bos_id()};
    for (int32_t t : tok.encode(text)) p.push_back(t);
    if ((int)p.size() >= T) p.resize(T - 1);
    const int n = std::min(opt.greedy_tokens, T - (int)p.size());
    const auto gr = greedy(er, p, n, tok.eos_id());
    const auto gc = greedy(ec, p, n, tok.eos_id());
    size_t same = 0;
    while (same < gr.size() && same < gc.size() && gr[same] == gc[same]) ++same;
    const size_t len = std::max(gr.size(), gc.size());
    agree += len ? (double)same / len : 1.0;
    rep.greedy_identical += gr == gc;
    // Teacher forcing along the reference's continuation.
    std::vector<int32_t> seq = p;
    seq.insert(seq.end(), gr.begin(), gr.end());
    if ((int)seq.size() > T) seq.resize(T);
    const float* lr0 = all_logits(er, seq);
    const std::vector<float> lr(lr0, lr0 + seq.size() * (size_t)V);
    const float* lc = all_logits(ec, seq);
    for (size_t i = 0; i < seq.size(); ++i)
      acc.add(lr.data() + i * V, lc + i * V, V, -1, &unused_p, &unused_q);
    ++rep.prompts;
  }
  rep.greedy_agreement = rep.prompts ? agree / rep.prompts : 0;
  double nll_p = 0, nll_q = 0;
  if (val && opt.val_tokens > 0) {
    const int64_t total = std::min<int64_t>(opt.val_tokens, val->size());
    std::vector<int32_t> w(T);
    for (int64_t first = 0; first + T <= total; first += T) {
      val->copy(first, T, w.data());
      const float* lr0 = all_logits(er, w);
      const std::vector<float> lr(lr0, lr0 + (size_t)T * V);
      const float* lc = all_logits(ec, w);
      for (int i = 0; i < T; ++i) {
        const int32_t target = i + 1 < T ? w[i + 1] : -1;
        acc.add(lr.data() + (size_t)i * V, lc + (size_t)i * V, V, target, &nll_p, &nll_q);
        if (target >= 0) ++rep.val_positions;
      }
    }
  }
  rep.positions = acc.n;
  rep.mean_kld = acc.n ? acc.kld / acc.n : 0;
  rep.max_kld = acc.max_kld;
  rep.top1_agreement = acc.n ? (double)acc.top1 / acc.n : 0;
  if (rep.val_positions > 0) {
    rep.ppl_reference = std::exp(nll_p / rep.val_positions);
    rep.ppl_candidate = std::exp(nll_q / rep.val_positions);
    rep.ppl_ratio = rep.ppl_candidate / rep.ppl_reference;
  }
  return rep;
}

}  // namespace tandem
