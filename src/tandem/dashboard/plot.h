// `tandem plot RUN_DIR... -o FILE.png|FILE.svg`: the dashboard's curves as a static picture for
// reports and CI logs, one panel per metric (metrics.jsonl fields, and tokens_per_s from
// timing.jsonl), a line per run, restarts and rollbacks marked; drawn with cairo.
#pragma once

#include <string>
#include <vector>

namespace tandem {

struct PlotOptions {
  std::vector<std::string> runs;
  std::string out;
  std::vector<std::string> metrics;  // empty: loss, and val_loss where a run has it
  int width = 1000, height = 600;
};

struct PlotResult {
  int runs = 0;                      // runs drawn
  std::vector<std::string> skipped;  // why each run that was not drawn was left out
};

// Throws "[plot] ..." for a bad output name or size, a metric no run has, or no readable run;
// a run directory that is not a run is skipped (named in the result) and the others are drawn.
// The picture is written aside and renamed into place.
PlotResult write_plot(const PlotOptions& o);

}  // namespace tandem
