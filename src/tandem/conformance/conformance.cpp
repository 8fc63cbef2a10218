// Runs the case table against a reference backend, then the training-level check.
#include "tandem/conformance/conformance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tandem/conformance/cases.h"
#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/ckpt/config.h"
#include "tandem/train/trainer.h"

namespace tandem {

using conformance::Ctx;
using conformance::Dims;
using conformance::KernelCases;

namespace conformance {
double threshold_f32(ErrorClass e) {
  switch (e) {
    case kExact: return 0.0;
    case kElementwise: return 1e-7;
    case kReduction: return 1e-6;
    default: return 5e-4;
  }
}

double threshold_for(ErrorClass e, const std::string& matmul_precision) {
  // bf16 matmuls round their inputs to 8 significant bits (relative error up to 2^-8 per
  // operand): about 1e-5 normalized MSE on random data; the threshold leaves headroom.
  if (matmul_precision == "bf16" && e == kMatmul) return 2e-3;
  return threshold_f32(e);
}

double training_tolerance(const std::string& matmul_precision) {
  return matmul_precision == "bf16" ? 2e-2 : 1e-4;
}
}  // namespace conformance

namespace {

using Results = std::vector<std::vector<double>>;

Results run_once(Backend& be, const KernelCases& k, const Dims& d, uint64_t seed, bool poison,
                 bool& guards_ok, double& ms) {
  Ctx c(be, seed, poison);
  k.run(c, d);
  ms = c.ms();
  return c.results(guards_ok);
}

bool same_bits(const Results& a, const Results& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return false;
    for (size_t j = 0; j < a[i].size(); ++j) {
      const float x = (float)a[i][j], y = (float)b[i][j];
      if (std::memcmp(&x, &y, 4) != 0 && !(std::isnan(x) && std::isnan(y))) return false;
      if (a[i][j] != b[i][j] && !(std::isnan(a[i][j]) && std::isnan(b[i][j]))) return false;
    }
  }
  return true;
}

// Worst normalized MSE over the outputs, on the positions finite in both; finite_ok is false
// when NaN or Inf sit in different places.
double compare(const Results& test, const Results& ref, bool& finite_ok) {
  finite_ok = test.size() == ref.size();
  double worst = 0;
  for (size_t i = 0; finite_ok && i < ref.size(); ++i) {
    if (test[i].size() != ref[i].size()) {
      finite_ok = false;
      break;
    }
    double err = 0, norm = 0;
    for (size_t j = 0; j < ref[i].size(); ++j) {
      const double t = test[i][j], r = ref[i][j];
      if (std::isnan(t) != std::isnan(r) || std::isinf(t) != std::isinf(r) ||
          (std::isinf(t) && (t > 0) != (r > 0))) {
        finite_ok = false;
        continue;
      }
      if (!std::isfinite(r)) continue;
      err += (t - r) * (t - r);
      norm += r * r;
    }
    worst = std::max(worst, err == 0 ? 0.0 : err / std::max(norm, 1e-30));
  }
  return worst;
}

std::string dims_label(const Dims& d) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i) s.push_back('x');
    s.append(std::to_string(d[i]));
  }
  return s;
}

}  // namespace

std::string CaseResult::why() const {
  std::string w;
  auto add = [&](const std::string& s) { w += (w.empty() ? "" : "; ") + s; };
  if (nmse > threshold) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "error %.3g over threshold %.3g", nmse, threshold);
    add(buf);
  }
  if (!finite_ok) add("NaN/Inf not where the reference has them");
  if (!guards_ok) add("wrote outside its output (guard region changed)");
  if (!deterministic) add("two runs gave different bits");
  return w;
}

const std::vector<std::string>& conformance_kernels() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& k : conformance::all_cases()) n.push_back(k.kernel);
    return n;
  }();
  return names;
}

void run_kernel_cases(Backend& test, Backend& ref, ConformanceReport& report) {
  report.hardware = test.describe();
  report.reference_hardware = ref.describe();
  const auto& cases = conformance::all_cases();
  for (size_t ki = 0; ki < cases.size(); ++ki) {
    const KernelCases& k = cases[ki];
    for (size_t si = 0; si < k.shapes.size(); ++si)
      for (bool poison : {false, true}) {
        const uint64_t seed = 0x5EED0000ull + ki * 131 + si * 7 + (poison ? 1 : 0);
        CaseResult r;
        r.kernel = k.kernel;
        r.shape = dims_label(k.shapes[si]);
        if (poison) r.shape.append(" nan/inf");
        r.threshold = conformance::threshold_for(k.error, test.matmul_precision());
        if (k.weight_dim >= 0) {
          const WType t = static_cast<WType>(k.shapes[si][k.weight_dim]);
          r.dtype = t == WType::Q8 ? "q8" : t == WType::Q4 ? "q4" : "f32";
        }
        if (k.error == conformance::kMatmul && test.matmul_precision() != "fp32" &&
            (r.dtype.empty() || r.dtype == "f32"))
          r.dtype = test.matmul_precision();
        bool g_ref = true, g1 = true, g2 = true, g3 = true;
        double ms_ref = 0, ms1 = 0, ms2 = 0, ms3 = 0;
        const Results want = run_once(ref, k, k.shapes[si], seed, poison, g_ref, ms_ref);
        const Results a = run_once(test, k, k.shapes[si], seed, poison, g1, ms1);
        const Results b = run_once(test, k, k.shapes[si], seed, poison, g2, ms2);
        run_once(test, k, k.shapes[si], seed, poison, g3, ms3);
        TANDEM_CHECK(g_ref);  // the reference itself stays inside its outputs
        r.guards_ok = g1 && g2 && g3;
        r.deterministic = same_bits(a, b);
        r.nmse = compare(a, want, r.finite_ok);
        double t[3] = {ms1, ms2, ms3};
        std::sort(t, t + 3);
        r.ms = t[1];
        report.cases.push_back(r);
      }
  }
}

namespace {
std::vector<double> losses(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<double> out;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}
}  // namespace

TrainingCheck run_training_check(const std::string& config_path, const std::string& name,
                                 int threads, int steps, double tolerance) {
  TrainingCheck tc;
  tc.steps = steps;
  tc.tolerance = tolerance;
  const RunConfig base = load_run_config(config_path);
  const std::string tmp =
      (std::filesystem::temp_directory_path() / ("tandem-conformance-" + std::to_string(::getpid())))
          .string();
  remove_all(tmp);
  std::vector<std::vector<double>> curves;
  for (const std::string& be : {std::string("cpu"), name}) {
    RunConfig cfg = base;
    cfg.train.backend = be;
    cfg.train.threads = threads;
    cfg.train.max_steps = steps;
    cfg.train.eval_every = 0;
    cfg.train.log_every = 1;
    cfg.checkpoint.every_steps = 0;
    cfg.checkpoint.every_seconds = 0;
    cfg.out_dir = tmp + "/" + be + (curves.empty() ? "-ref" : "-test");
    TrainOptions opts;
    opts.progress = false;
    opts.faults = "";
    try {
      run_training(cfg, opts);
    } catch (...) {
      remove_all(tmp);  // leave no half-finished runs behind
      throw;
    }
    curves.push_back(losses(cfg.out_dir));
  }
  remove_all(tmp);
  if (curves[0].size() != (size_t)steps || curves[1].size() != (size_t)steps)
    fail("[conformance] the training check logged " + std::to_string(curves[1].size()) +
         " losses on '" + name + "' and " + std::to_string(curves[0].size()) +
         " on the CPU; expected " + std::to_string(steps));
  for (int i = 0; i < steps; ++i) {
    const double d = std::fabs(curves[1][i] - curves[0][i]) / std::max(1e-12, std::fabs(curves[0][i]));
    tc.max_rel_diff = std::max(tc.max_rel_diff, std::isnan(d) ? INFINITY : d);
  }
  tc.ran = true;
  return tc;
}

bool ConformanceReport::pass() const {
  for (const auto& c : cases)
    if (!c.pass()) return false;
  return !cases.empty() && training.pass();
}

nlohmann::json ConformanceReport::to_json() const {
  nlohmann::json j;
  j["backend"] = backend;
  j["reference"] = reference;
  j["matmul_precision"] = matmul_precision;
  j["hardware"] = hardware;
  j["reference_hardware"] = reference_hardware;
  j["verdict"] = pass() ? "pass" : "fail";
  for (const auto& c : cases)
    j["cases"].push_back({{"kernel", c.kernel},       {"shape", c.shape},
                          {"dtype", c.dtype},         {"nmse", c.nmse},
                          {"threshold", c.threshold}, {"finite_ok", c.finite_ok},
                          {"guards_ok", c.guards_ok}, {"deterministic", c.deterministic},
                          {"ms", c.ms},               {"pass", c.pass()}});
  j["training"] = {{"ran", training.ran},
                   {"steps", training.steps},
                   {"max_rel_loss_diff", training.max_rel_diff},
                   {"tolerance", training.tolerance},
                   {"pass", training.pass()}};
  return j;
}

std::string ConformanceReport::to_text() const {
  std::ostringstream o;
  if (!hardware.empty()) o << "backend: " << hardware << "\nreference: " << reference_hardware << "\n";
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-22s %-20s %-5s %10s %10s %9s  %s\n", "kernel", "shape",
                "dtype", "nmse", "threshold", "ms", "result");
  o << buf;
  int failed = 0;
  for (const auto& c : cases) {
    std::snprintf(buf, sizeof buf, "%-22s %-20s %-5s %10.2e %10.1e %9.3f  %s\n", c.kernel.c_str(),
                  c.shape.c_str(), c.dtype.c_str(), c.nmse, c.threshold, c.ms,
                  c.pass() ? "pass" : ("FAIL: " + c.why()).c_str());
    o << buf;
    failed += !c.pass();
  }
  if (training.ran) {
    std::snprintf(buf, sizeof buf,
                  "training: %d steps, largest relative loss difference %.3g (tolerance %.3g): %s\n",
                  training.steps, training.max_rel_diff, training.tolerance,
                  training.pass() ? "pass" : "FAIL");
    o << buf;
  } else {
    o << "training: not run\n";
  }
  std::snprintf(buf, sizeof buf,
                "verdict: %s (%zu kernel cases, %d failed) for backend '%s' (%s matmuls) against "
                "'%s'\n",
                pass() ? "PASS" : "FAIL", cases.size(), failed, backend.c_str(),
                matmul_precision.c_str(), reference.c_str());
  o << buf;
  return o.str();
}

}  // namespace tandem
