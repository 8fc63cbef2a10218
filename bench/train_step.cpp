// Times Tandem training steps (forward + backward + AdamW) of a config on random tokens and
// prints tokens/s, achieved FLOP/s as a fraction of the measured fp32 peak, and where the
// time goes per kernel family (with --profile). On a GPU backend (--backend cuda) it reports
// model FLOP utilization against the device's dense peak (--peak-tflops, default 989.4: the
// H100 SXM's bf16 dense rate) and against the matmul rate measured on it (a 4096^3 matmul).
//   train_step CONFIG.toml [--batch B] [--seq T] [--steps N] [--warmup W] [--threads K]
//              [--profile] [--backend NAME] [--peak-tflops X]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "peak.h"
#include "profiling_backend.h"
#include "tandem/core/error.h"
#include "tandem/core/rng.h"
#include "tandem/model/llama.h"
#include "tandem/ckpt/config.h"
#include "tandem/train/optimizer.h"

using namespace tandem;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: train_step CONFIG.toml [--batch B] [--seq T] [--steps N] "
                 "[--warmup W] [--threads K] [--profile]\n");
    return 2;
  }
  try {
    RunConfig cfg = load_run_config(argv[1]);
    int B = cfg.train.batch_size, T = cfg.train.seq_len, steps = 10, warmup = 2, threads = 2;
    bool profile = false;
    std::string backend = cfg.train.backend;
    double peak_tflops = 989.4;
    for (int i = 2; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&] { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
      if (a == "--batch")
        B = next();
      else if (a == "--seq")
        T = next();
      else if (a == "--steps")
        steps = next();
      else if (a == "--warmup")
        warmup = next();
      else if (a == "--threads")
        threads = next();
      else if (a == "--profile")
        profile = true;
      else if (a == "--backend" && i + 1 < argc)
        backend = argv[++i];
      else if (a == "--peak-tflops" && i + 1 < argc)
        peak_tflops = std::atof(argv[++i]);
      else
        fail("unknown argument '" + a + "'");
    }
    auto cpu = make_backend(backend, threads);
    std::printf("kernels: %s\n", cpu->describe().c_str());
    bench::ProfilingBackend prof(*cpu);
    Backend& be = profile ? static_cast<Backend&>(prof) : *cpu;
    Llama model(cfg.model, be);
    model.init(1);
    AdamW opt(model, 0.9f, 0.95f, 1e-8f, 0.1f);
    std::vector<int32_t> tokens((size_t)B * T), targets((size_t)B * T);
    const int V = cfg.model.vocab_size;
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = (int32_t)(rng_u64(7, 0, i) % V);
      targets[i] = (int32_t)(rng_u64(7, 1, i) % V);
    }
    std::vector<double> times;
    // On a shared machine the speed drifts by tens of percent over seconds (other tenants on
    // the cores), so on the CPU the fp32 peak is also measured right after every timed step,
    // and each step's rates are compared with the peak of that moment (medians reported).
    const bool on_cpu = backend == "cpu";
    std::vector<double> step_frac, step_mm_frac;
    for (int s = 0; s < warmup + steps; ++s) {
      if (s == warmup) {
        prof.seconds.clear();
        prof.matmul_flops = 0;
      }
      const double mm_s0 = prof.seconds["matmul"], mm_f0 = prof.matmul_flops;
      auto t0 = std::chrono::steady_clock::now();
      model.zero_grads();
      model.forward(tokens.data(), B, T);
      model.loss(targets.data(), 1.0f / (B * T), true);
      model.backward();
      clip_grad_norm(model, 1.0f);
      opt.step(1e-4f, s + 1);
      be.synchronize();
      if (s >= warmup) {
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        times.push_back(dt);
        if (on_cpu) {
          const double pk = bench::measure_peak_flops(threads, 5'000'000);
          step_frac.push_back(B * T / dt * cfg.model.train_flops_per_token(T) / pk);
          if (profile)
            step_mm_frac.push_back((prof.matmul_flops - mm_f0) /
                                   (prof.seconds["matmul"] - mm_s0) / pk);
        }
      }
    }
    auto med_of = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.empty() ? 0.0 : v[v.size() / 2];
    };
    // Time per kernel family (each call synchronized), and the matmuls' rate against `peak`.
    auto print_profile = [&](double peak) {
      double total = 0;
      for (auto& [k, v] : prof.seconds) total += v;
      for (auto& [k, v] : prof.seconds)
        std::printf("  %-14s %8.4f s/step  %5.1f%%\n", k.c_str(), v / steps, 100 * v / total);
      double mm = prof.matmul_flops / prof.seconds["matmul"];
      std::printf("  matmul rate: %.1f GFLOP/s = %.1f%% of peak\n", mm / 1e9, 100 * mm / peak);
      for (auto& [k, v] : prof.matmul_shapes)
        std::printf("    %-24s %8.4f s/step  %6.1f GFLOP/s = %5.1f%%\n", k.c_str(), v.first / steps,
                    v.second / v.first / 1e9, 100 * v.second / v.first / peak);
      if (!step_mm_frac.empty())
        std::printf("  matmul rate against the peak measured right after each step: median "
                    "%.1f%%\n", 100 * med_of(step_mm_frac));
    };
    std::sort(times.begin(), times.end());
    double med = times[times.size() / 2];
    double tps = B * T / med;
    double flops = tps * cfg.model.train_flops_per_token(T);
    if (backend != "cpu") {
      // The device's own matmul rate: a square 4096 matmul, median of 5 after a warmup.
      const int n = 4096;
      float* a = static_cast<float*>(cpu->alloc((size_t)n * n * 4));
      float* w = static_cast<float*>(cpu->alloc((size_t)n * n * 4));
      float* o = static_cast<float*>(cpu->alloc((size_t)n * n * 4));
      {  // random operands: zeros or uninitialized memory can time faster than real data
        std::vector<float> h((size_t)n * n);
        for (size_t i = 0; i < h.size(); ++i) h[i] = (float)(rng_u64(9, 0, i) % 2001) / 1000.f - 1.f;
        cpu->to_device(a, h.data(), h.size() * 4);
        cpu->to_device(w, h.data(), h.size() * 4);
      }
      std::vector<double> mt;
      for (int r = 0; r < 6; ++r) {
        cpu->synchronize();
        auto t0 = std::chrono::steady_clock::now();
        cpu->matmul_forward(o, a, w, n, n, n);
        cpu->synchronize();
        if (r > 0)
          mt.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(mt.begin(), mt.end());
      const double mm_rate = 2.0 * n * n * n / mt[mt.size() / 2];
      cpu->release(a);
      cpu->release(w);
      cpu->release(o);
      std::printf("config %s on %s (%s matmuls): batch %d x %d tokens, %lld params\n", argv[1],
                  backend.c_str(), cpu->matmul_precision().c_str(), B, T,
                  (long long)cfg.model.num_params());
      std::printf("tandem: median step %.4f s, %.0f tokens/s, %.1f TFLOP/s\n", med, tps,
                  flops / 1e12);
      std::printf("  MFU %.1f%% of the %.1f TFLOP/s dense peak; %.1f%% of the measured matmul "
                  "rate %.1f TFLOP/s\n",
                  100 * flops / (peak_tflops * 1e12), peak_tflops, 100 * flops / mm_rate,
                  mm_rate / 1e12);
      if (profile) print_profile(mm_rate);
      std::printf("RESULT tokens_per_s=%.1f step_s=%.5f mfu=%.4f mfu_measured=%.4f\n", tps, med,
                  flops / (peak_tflops * 1e12), flops / mm_rate);
      return 0;
    }
    double peak = bench::measure_peak_flops(threads);
    std::printf("config %s: batch %d x %d tokens, %d threads, %lld params\n", argv[1], B, T,
                threads, (long long)cfg.model.num_params());
    std::printf(
        "tandem: median step %.4f s, %.0f tokens/s, %.1f GFLOP/s = %.1f%% of measured "
        "fp32 peak %.1f GFLOP/s\n",
        med, tps, flops / 1e9, 100 * flops / peak, peak / 1e9);
    std::printf("  against the peak measured right after each step: median %.1f%%\n",
                100 * med_of(step_frac));
    if (profile) print_profile(peak);
    std::printf("RESULT tokens_per_s=%.1f step_s=%.5f flops_frac=%.4f step_flops_frac=%.4f%s\n",
                tps, med, flops / peak, med_of(step_frac),
                step_mm_frac.empty() ? ""
                                     : (" matmul_frac=" + std::to_string(med_of(step_mm_frac))).c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
