// tandem plot RUN_DIR... -o FILE.png|FILE.svg [--metric loss,val_loss] [--size 1000x600]
#include <cstdio>
#include <sstream>

#include "tandem/cli/commands.h"
#include "tandem/core/error.h"
#include "tandem/dashboard/plot.h"

namespace tandem::cli {

void add_plot(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("plot", "draw runs' curves into a PNG or SVG file");
  auto o = std::make_shared<PlotOptions>();
  auto metrics = std::make_shared<std::string>();
  auto size = std::make_shared<std::string>("1000x600");
  cmd->add_option("runs", o->runs, "run directories")->required();
  cmd->add_option("-o,--out", o->out, "FILE.png or FILE.svg")->required();
  cmd->add_option("--metric", *metrics, "metrics, comma-separated (metrics.jsonl fields, "
                  "tokens_per_s; default: loss and val_loss)");
  cmd->add_option("--size", *size, "WIDTHxHEIGHT in pixels")->capture_default_str();
  cmd->callback([&action, o, metrics, size] {
    action = [o, metrics, size] {
      o->metrics.clear();
      std::stringstream ss(*metrics);
      for (std::string m; std::getline(ss, m, ',');)
        if (!m.empty()) o->metrics.push_back(m);
      if (std::sscanf(size->c_str(), "%dx%d", &o->width, &o->height) != 2)
        fail("[plot] --size '" + *size + "' is not WIDTHxHEIGHT");
      const PlotResult r = write_plot(*o);
      for (const std::string& s : r.skipped) std::fprintf(stderr, "%s: skipped\n", s.c_str());
      std::fprintf(stderr, "[plot] %s: %d run%s, %dx%d\n", o->out.c_str(), r.runs,
                   r.runs == 1 ? "" : "s", o->width, o->height);
    };
  });
}

}  // namespace tandem::cli
