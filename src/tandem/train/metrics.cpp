// MetricsLog and TimingLog: JSONL appends, flushed per line (a record survives a SIGKILL).
#include "tandem/train/metrics.h"

#include <nlohmann/json.hpp>
#include <cmath>
#include <sstream>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/train/events.h"

namespace tandem {

namespace {
FILE* open_append(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "a");
  if (!f) fail("[train] cannot open log '" + path + "'");
  return f;
}
void put_line(FILE* f, const std::string& line) {
  if (!f) return;  // an empty path: a rank that writes nothing
  std::fputs(line.c_str(), f);
  std::fputc('\n', f);
  std::fflush(f);
}
}  // namespace

MetricsLog::MetricsLog(const std::string& path, int64_t resume_step) : path_(path) {
  truncate(resume_step);
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::truncate(int64_t step) {
  if (f_) std::fclose(f_);
  f_ = nullptr;
  if (path_.empty()) return;  // a rank that writes nothing
  std::string kept;
  if (path_exists(path_)) {
    std::istringstream in(read_file(path_));
    std::string line;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", (int64_t)0) <= step) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        // a torn last line from a crash: drop it
      }
    }
  }
  atomic_write_file(path_, kept);
  f_ = open_append(path_);
}

void MetricsLog::write(const std::string& line) { put_line(f_, line); }

void MetricsLog::step(int64_t step, double loss, float lr, double grad_norm,
                      const nlohmann::json& extra) {
  nlohmann::ordered_json j = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm}};
  if (extra.is_object())
    for (const auto& [k, v] : extra.items()) j[k] = v;
  write(j.dump());
}

void MetricsLog::record(int64_t step, const nlohmann::json& fields) {
  nlohmann::ordered_json j = {{"step", step}};
  for (const auto& [k, v] : fields.items()) j[k] = v;
  write(j.dump());
}

void MetricsLog::eval(int64_t step, double val_loss, double val_token_accuracy) {
  nlohmann::ordered_json j = {{"step", step}, {"val_loss", val_loss}};
  if (val_token_accuracy >= 0) j["val_token_accuracy"] = val_token_accuracy;
  write(j.dump());
}

TimingLog::TimingLog(const std::string& path) : f_(path.empty() ? nullptr : open_append(path)) {}

TimingLog::~TimingLog() {
  if (f_) std::fclose(f_);
}

void TimingLog::step(int64_t step, double step_s, double tokens_per_s,
                     const nlohmann::json& extra) {
  nlohmann::ordered_json j = {{"step", step},
                              {"t", std::round(unix_now() * 1000.0) / 1000.0},
                              {"step_s", step_s},
                              {"tokens_per_s", std::round(tokens_per_s)}};
  if (extra.is_object())
    for (const auto& [k, v] : extra.items()) j[k] = v;
  put_line(f_, j.dump());
}

}  // namespace tandem
