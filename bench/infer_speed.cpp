// Batch-1 inference speed of a checkpoint: prefill of a P-token prompt and greedy decoding of
// G tokens, median of several repetitions. Prints one JSON line per weight type.
//   infer_speed CHECKPOINT [--quant none,int8,q4] [--prompt 128] [--gen 128] [--reps 5]
//               [--threads 2] [--batch B (also time B sequences decoding together)]
//               [--single 0 (skip the batch-1 timings)]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "profiling_backend.h"
#include "tandem/core/error.h"
#include "tandem/infer/engine.h"
#include "tandem/infer/quant.h"
#include "tandem/infer/sampler.h"

using namespace tandem;
using Clock = std::chrono::steady_clock;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: infer_speed CHECKPOINT [--quant none,int8,q4] [--prompt N] [--gen N] [--reps N] [--threads N]\n");
    return 2;
  }
  std::string ckpt = argv[1], quants = "none,int8,q4";
  int P = 128, G = 128, reps = 5, threads = 2, batch = 1, single = 1, profile = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--quant") quants = v;
    else if (k == "--prompt") P = std::atoi(v.c_str());
    else if (k == "--gen") G = std::atoi(v.c_str());
    else if (k == "--reps") reps = std::atoi(v.c_str());
    else if (k == "--threads") threads = std::atoi(v.c_str());
    else if (k == "--batch") batch = std::atoi(v.c_str());
    else if (k == "--single") single = std::atoi(v.c_str());
    else if (k == "--profile") profile = std::atoi(v.c_str());
  }
  try {
    ModelFiles mf = load_model_files(ckpt);
    const ModelConfig& c = mf.config.model;
    G = std::min(G, c.context / 2);
    P = std::min(P, c.context - G);
    auto cpu = make_backend("cpu", threads);
    std::fprintf(stderr, "kernels: %s\n", cpu->describe().c_str());
    bench::ProfilingBackend prof(*cpu);
    Backend* be = profile ? static_cast<Backend*>(&prof) : cpu.get();
    std::stringstream qs(quants);
    for (std::string q; std::getline(qs, q, ',');) {
      InferModel im(c, mf.params.data(), *be, parse_quant(q));
      BatchEngine eng(im, EngineOptions{1, c.context, c.context, 1});
      // Long enough for the batched run's prompts too (8 + s tokens for sequence s).
      std::vector<int32_t> prompt(std::max(P, 8 + batch));
      for (size_t i = 0; i < prompt.size(); ++i)
        prompt[i] = 3 + (int32_t)((i * 7919) % (c.vocab_size - 3));
      std::vector<double> pre, dec;
      std::vector<float> row(c.vocab_size);
      std::map<std::string, double> prefill_sec;           // with --profile: per kernel family
      for (int r = 0; r < (single ? reps + 1 : 0); ++r) {  // the first repetition warms up
        eng.reset(0);
        prof.seconds.clear();
        auto t0 = Clock::now();
        BatchEngine::Item it{0, prompt.data(), P, false};
        const float* lg = eng.step({&it, 1});
        if (r > 0)
          for (const auto& [k, sec] : prof.seconds) prefill_sec[k] += sec;
        row.assign(lg, lg + c.vocab_size);
        int32_t next = argmax(row);
        auto t1 = Clock::now();
        for (int g = 0; g < G; ++g) {
          it = {0, &next, 1, false};
          lg = eng.step({&it, 1});
          row.assign(lg, lg + c.vocab_size);
          next = argmax(row);
        }
        auto t2 = Clock::now();
        if (r == 0) continue;
        pre.push_back(P / std::chrono::duration<double>(t1 - t0).count());
        dec.push_back(G / std::chrono::duration<double>(t2 - t1).count());
      }
      for (const auto& [k, sec] : prefill_sec)  // ms per prefill of P tokens
        std::fprintf(stderr, "  prefill %-14s %7.3f ms\n", k.c_str(), sec * 1e3 / reps);
      // Batched decoding: `batch` sequences step together (what the server does).
      double batched = 0;
      if (batch > 1) {
        BatchEngine be2(im, EngineOptions{batch, c.context, c.context, batch});
        std::vector<double> rates;
        for (int r = 0; r < reps + 1; ++r) {
          std::vector<int32_t> last(batch);
          std::vector<BatchEngine::Item> items(batch);
          for (int s = 0; s < batch; ++s) {
            be2.reset(s);
            items[s] = {s, prompt.data(), 8 + s, false};
          }
          be2.step(items);
          for (int s = 0; s < batch; ++s) last[s] = 3 + s;
          if (r == 1) prof.seconds.clear();
          auto t0 = Clock::now();
          for (int g = 0; g < G; ++g) {
            for (int s = 0; s < batch; ++s) items[s] = {s, &last[s], 1, false};
            be2.step(items);
          }
          if (r > 0) rates.push_back((double)G * batch / std::chrono::duration<double>(Clock::now() - t0).count());
        }
        batched = median(rates);
        if (profile) {  // per kernel family, ms per batched step
          for (const auto& [k, sec] : prof.seconds)
            std::fprintf(stderr, "  %-14s %7.3f ms/step\n", k.c_str(), sec * 1e3 / ((double)reps * G));
        }
      }
      std::printf("{\"runtime\":\"tandem\",\"quant\":\"%s\",\"params\":%lld,\"weight_mb\":%.1f,"
                  "\"prompt\":%d,\"gen\":%d,\"prefill_tps\":%.1f,\"decode_tps\":%.1f,"
                  "\"batch\":%d,\"batched_decode_tps\":%.1f,\"kernels\":%s}\n",
                  q.c_str(), (long long)c.num_params(), im.weight_bytes() / 1e6, P, G,
                  single ? median(pre) : 0.0, single ? median(dec) : 0.0, batch, batched,
                  nlohmann::json(cpu->describe()).dump().c_str());
      std::fflush(stdout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
