// MetricsLog: JSONL appends, flushed per line.
#include "tandem/train/metrics.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"

namespace tandem {

MetricsLog::MetricsLog(const std::string& path, int64_t resume_step) {
  std::string kept;
  if (path_exists(path)) {
    std::istringstream in(read_file(path));
    std::string line;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", (int64_t)0) <= resume_step) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        // a torn last line from a crash: drop it
      }
    }
  }
  atomic_write_file(path, kept);
  f_ = std::fopen(path.c_str(), "a");
  if (!f_) fail("[train] cannot open metrics log '" + path + "'");
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::write(const std::string& line) {
  std::fputs(line.c_str(), f_);
  std::fputc('\n', f_);
  std::fflush(f_);
}

void MetricsLog::step(int64_t step, double loss, float lr, double grad_norm, double tokens_per_s,
                      double elapsed_s, bool skipped) {
  nlohmann::ordered_json j = {{"step", step},
                              {"loss", loss},
                              {"lr", lr},
                              {"grad_norm", grad_norm},
                              {"tokens_per_s", tokens_per_s},
                              {"elapsed_s", elapsed_s}};
  if (skipped) j["skipped"] = true;
  write(j.dump());
}

void MetricsLog::eval(int64_t step, double val_loss) {
  write(nlohmann::ordered_json({{"step", step}, {"val_loss", val_loss}}).dump());
}

}  // namespace tandem
