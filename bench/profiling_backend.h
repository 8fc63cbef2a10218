// A Backend decorator that forwards every call and accumulates wall time per kernel family,
// so a benchmark can say where a training step's time goes on any backend.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "tandem/backend/backend.h"

namespace tandem::bench {

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : b_(inner) {}
  std::map<std::string, double> seconds;  // per kernel family
  std::string name() const override { return b_.name(); }

  void* alloc(size_t n) override { return b_.alloc(n); }
  void release(void* p) override { b_.release(p); }
  void to_device(void* d, const void* s, size_t n) override {
    t("copy", [&] { b_.to_device(d, s, n); });
  }
  void to_host(void* d, const void* s, size_t n) override {
    t("copy", [&] { b_.to_host(d, s, n); });
  }
  void zero(void* p, size_t n) override {
    t("zero", [&] { b_.zero(p, n); });
  }
  void synchronize() override { b_.synchronize(); }
  void embedding_forward(float* o, const int32_t* tk, const float* tb, int N, int C) override {
    t("embedding", [&] { b_.embedding_forward(o, tk, tb, N, C); });
  }
  void embedding_backward(float* d, const float* g, const int32_t* tk, int N, int C) override {
    t("embedding", [&] { b_.embedding_backward(d, g, tk, N, C); });
  }
  void rmsnorm_forward(float* o, float* r, const float* x, const float* w, int N, int C,
                       float e) override {
    t("rmsnorm", [&] { b_.rmsnorm_forward(o, r, x, w, N, C, e); });
  }
  void rmsnorm_backward(float* dx, float* dw, const float* g, const float* x, const float* w,
                        const float* r, int N, int C) override {
    t("rmsnorm", [&] { b_.rmsnorm_backward(dx, dw, g, x, w, r, N, C); });
  }
  void add_rmsnorm_forward(float* s, float* o, float* r, const float* a, const float* b,
                           const float* w, int N, int C, float e) override {
    t("add_rmsnorm", [&] { b_.add_rmsnorm_forward(s, o, r, a, b, w, N, C, e); });
  }
  void matmul_forward(float* o, const float* x, const float* w, int M, int N, int K) override {
    const double s0 = seconds["matmul"];
    t("matmul", [&] { b_.matmul_forward(o, x, w, M, N, K); });
    matmul_flops += 2.0 * M * N * K;
    shape("fwd", M, N, K, seconds["matmul"] - s0, 2.0 * M * N * K);
  }
  void matmul_backward(float* dx, float* dw, const float* g, const float* x, const float* w, int M,
                       int N, int K) override {
    const double s0 = seconds["matmul"];
    t("matmul", [&] { b_.matmul_backward(dx, dw, g, x, w, M, N, K); });
    const double f = 2.0 * M * N * K * ((dx ? 1 : 0) + (dw ? 1 : 0));
    matmul_flops += f;
    shape(dx && dw ? "bwd" : dx ? "bwd dx" : "bwd dw", M, N, K, seconds["matmul"] - s0, f);
  }
  void rope(float* q, const AttnShape& s, int p, float th, bool inv) override {
    t("rope", [&] { b_.rope(q, s, p, th, inv); });
  }
  void attention_forward(float* o, float* l, const float* q, const AttnShape& s) override {
    t("attention", [&] { b_.attention_forward(o, l, q, s); });
  }
  void attention_backward(float* d, const float* g, const float* q, const float* o, const float* l,
                          const AttnShape& s) override {
    t("attention", [&] { b_.attention_backward(d, g, q, o, l, s); });
  }
  void swiglu_forward(float* o, const float* gu, int N, int F) override {
    t("swiglu", [&] { b_.swiglu_forward(o, gu, N, F); });
  }
  void swiglu_backward(float* d, const float* g, const float* gu, int N, int F) override {
    t("swiglu", [&] { b_.swiglu_backward(d, g, gu, N, F); });
  }
  void add(float* o, const float* a, const float* b, size_t n) override {
    t("add", [&] { b_.add(o, a, b, n); });
  }
  void cross_entropy(float* l, float* d, const float* x, const int32_t* tg, int N, int V,
                     float s) override {
    t("cross_entropy", [&] { b_.cross_entropy(l, d, x, tg, N, V, s); });
  }
  void cross_entropy_rows(float* l, float* e, float* d, const float* x, const int32_t* tg,
                          const float* w, int N, int V) override {
    t("cross_entropy", [&] { b_.cross_entropy_rows(l, e, d, x, tg, w, N, V); });
  }
  void adamw(float* p, float* m, float* v, const float* g, size_t n, float lr, float b1, float b2,
             float e, float wd, int64_t step) override {
    t("adamw", [&] { b_.adamw(p, m, v, g, n, lr, b1, b2, e, wd, step); });
  }
  double sum_squares(const float* x, size_t n) override {
    double r = 0;
    t("norm", [&] { r = b_.sum_squares(x, n); });
    return r;
  }
  void scale(float* x, size_t n, float s) override {
    t("norm", [&] { b_.scale(x, n, s); });
  }
  bool all_finite(const float* x, size_t n) override {
    bool r = true;
    t("finite", [&] { r = b_.all_finite(x, n); });
    return r;
  }
  void attention_kv_forward(float* o, float* k, float* v, const float* q, const AttnShape& s, int p,
                            int n) override {
    t("attention_kv", [&] { b_.attention_kv_forward(o, k, v, q, s, p, n); });
  }
  void rope_batch(float* q, const AttnShape& s, const KvBatch& b, float th) override {
    t("rope", [&] { b_.rope_batch(q, s, b, th); });
  }
  void attention_kv_batch(float* o, float* k, float* v, const float* q, const AttnShape& s,
                          const KvBatch& b) override {
    t("attention_kv", [&] { b_.attention_kv_batch(o, k, v, q, s, b); });
  }
  void wmatmul_forward(float* o, const float* x, const WMatrix& w, int M, void* s) override {
    t("wmatmul", [&] { b_.wmatmul_forward(o, x, w, M, s); });
  }
  double matmul_flops = 0;
  // Matmul time and FLOPs per call shape ("fwd 2048x864x288": M x N x K).
  std::map<std::string, std::pair<double, double>> matmul_shapes;

 private:
  void shape(const char* dir, int M, int N, int K, double sec, double flops) {
    auto& e = matmul_shapes[std::string(dir) + " " + std::to_string(M) + "x" + std::to_string(N) +
                            "x" + std::to_string(K)];
    e.first += sec;
    e.second += flops;
  }
  template <typename F>
  void t(const char* k, F&& f) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    b_.synchronize();
    seconds[k] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  Backend& b_;
};

}  // namespace tandem::bench
