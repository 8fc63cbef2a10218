// write_plot (see plot.h): one panel per metric, a line per run, restarts and rollbacks as
// markers, drawn with cairo into a PNG or an SVG.
#include "tandem/dashboard/plot.h"

#include <cairo-svg.h>
#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"

namespace tandem {
namespace {

struct Series {
  std::vector<double> x, y;
};
struct Run {
  std::string name;
  std::map<std::string, Series> metrics;  // metric -> points by step
  std::vector<std::pair<double, std::string>> events;  // (step, kind)
};

const double kColors[][3] = {{0.18, 0.53, 0.87}, {0.90, 0.49, 0.13}, {0.15, 0.68, 0.38},
                             {0.56, 0.27, 0.68}, {0.75, 0.22, 0.17}, {0.09, 0.63, 0.52}};

std::vector<nlohmann::json> records(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.is_object()) out.push_back(std::move(j));
    } catch (const std::exception&) {
      // a torn last line of a run still writing, or a stray line: skipped
    }
  }
  return out;
}

Run read_run(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) fail("'" + dir + "' is not a directory");
  if (!path_exists(dir + "/metrics.jsonl"))
    fail("'" + dir + "' is not a run directory (no metrics.jsonl)");
  Run r;
  r.name = std::filesystem::path(dir).lexically_normal().filename().string();
  if (r.name.empty())
    r.name = std::filesystem::path(dir).lexically_normal().parent_path().filename().string();
  std::map<std::string, std::map<double, double>> by;  // the last record of a step wins
  for (const auto& j : records(dir + "/metrics.jsonl"))
    for (const auto& [k, v] : j.items())
      if (k != "step" && v.is_number() && j.contains("step")) by[k][j["step"].get<double>()] = v.get<double>();
  std::vector<std::pair<double, int64_t>> times;  // (unix time, step) for events without a step
  for (const auto& j : records(dir + "/timing.jsonl")) {
    if (!j.contains("step")) continue;
    const double s = j["step"].get<double>();
    if (j.contains("tokens_per_s")) by["tokens_per_s"][s] = j["tokens_per_s"].get<double>();
    if (j.contains("t")) times.push_back({j["t"].get<double>(), (int64_t)s});
  }
  for (auto& [k, m] : by)
    for (auto [x, y] : m) r.metrics[k].x.push_back(x), r.metrics[k].y.push_back(y);
  static const std::set<std::string> kMarked = {"restart", "rollback", "batch_skipped", "hang",
                                                "transient_fault", "regroup", "collective_failed"};
  for (const auto& e : records(dir + "/events.jsonl")) {
    const std::string kind = e.value("event", "");
    if (!kMarked.count(kind)) continue;
    double step = -1;
    if (e.contains("step")) step = e["step"].get<double>();
    else if (e.contains("from_step")) step = e["from_step"].get<double>();
    else if (e.contains("t"))
      for (const auto& [t, s] : times)
        if (t <= e["t"].get<double>()) step = (double)s;
    if (step >= 0) r.events.push_back({step, kind});
  }
  return r;
}

std::string tick(double v) {
  char b[32];
  const double a = std::fabs(v);
  if (a == 0) return "0";
  if (a < 1e-3 || a >= 1e6) std::snprintf(b, sizeof b, "%.1e", v);
  else if (a >= 1000) std::snprintf(b, sizeof b, "%.3gk", v / 1000);
  else std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

// Round tick spacing: 1, 2 or 5 times a power of ten, about n ticks over [lo, hi].
double spacing(double lo, double hi, int n) {
  const double raw = (hi - lo) / n, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * p) return m * p;
  return 10 * p;
}

void panel(cairo_t* cr, double X, double Y, double W, double H, const std::string& metric,
           const std::vector<Run>& runs) {
  const double L = 64, R = 16, T = 26, B = 34;  // margins
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Run& r : runs) {
    auto it = r.metrics.find(metric);
    if (it == r.metrics.end()) continue;
    for (double x : it->second.x) x0 = std::min(x0, x), x1 = std::max(x1, x);
    for (double y : it->second.y)
      if (std::isfinite(y)) y0 = std::min(y0, y), y1 = std::max(y1, y);
  }
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_rectangle(cr, X, Y, W, H);
  cairo_fill(cr);
  cairo_set_source_rgb(cr, 0.11, 0.14, 0.19);
  cairo_set_font_size(cr, 13);
  cairo_move_to(cr, X + 8, Y + 17);
  cairo_show_text(cr, metric.c_str());
  cairo_text_extents_t title;
  cairo_text_extents(cr, metric.c_str(), &title);
  if (!(x1 >= x0) || !(y1 >= y0)) return;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1, y0 -= 1;
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad, y1 += pad;
  const double px0 = X + L, px1 = X + W - R, py0 = Y + H - B, py1 = Y + T;
  auto sx = [&](double x) { return px0 + (x - x0) / (x1 - x0) * (px1 - px0); };
  auto sy = [&](double y) { return py0 - (y - y0) / (y1 - y0) * (py0 - py1); };
  // Grid and tick labels.
  cairo_set_font_size(cr, 11);
  cairo_set_line_width(cr, 1);
  const double dx = spacing(x0, x1, 8), dy = spacing(y0, y1, 5);
  for (double v = std::ceil(x0 / dx) * dx; v <= x1 + 1e-9; v += dx) {
    cairo_set_source_rgb(cr, 0.9, 0.91, 0.93);
    cairo_move_to(cr, sx(v), py1);
    cairo_line_to(cr, sx(v), py0);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.35, 0.38, 0.45);
    const std::string s = tick(v);
    cairo_move_to(cr, sx(v) - 3.0 * s.size(), py0 + 15);
    cairo_show_text(cr, s.c_str());
  }
  for (double v = std::ceil(y0 / dy) * dy; v <= y1 + 1e-12; v += dy) {
    cairo_set_source_rgb(cr, 0.9, 0.91, 0.93);
    cairo_move_to(cr, px0, sy(v));
    cairo_line_to(cr, px1, sy(v));
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.35, 0.38, 0.45);
    const std::string s = tick(v);
    cairo_move_to(cr, px0 - 8 - 6.0 * s.size(), sy(v) + 4);
    cairo_show_text(cr, s.c_str());
  }
  cairo_move_to(cr, (px0 + px1) / 2 - 12, py0 + 29);
  cairo_show_text(cr, "step");
  // Events, then the curves over them.
  for (size_t i = 0; i < runs.size(); ++i)
    for (const auto& [s, kind] : runs[i].events) {
      if (s < x0 || s > x1) continue;
      const bool bad = kind == "restart" || kind == "hang" || kind == "collective_failed";
      cairo_set_source_rgba(cr, bad ? 0.75 : 0.84, bad ? 0.22 : 0.54, bad ? 0.17 : 0.06, 0.8);
      const double dash[] = {4, 3};
      cairo_set_dash(cr, dash, 2, 0);
      cairo_move_to(cr, sx(s), py1);
      cairo_line_to(cr, sx(s), py0);
      cairo_stroke(cr);
      cairo_set_dash(cr, nullptr, 0, 0);
    }
  double lx = std::max(px0 + 8, X + 8 + title.x_advance + 24);  // the legend, after the title
  for (size_t i = 0; i < runs.size(); ++i) {
    auto it = runs[i].metrics.find(metric);
    if (it == runs[i].metrics.end()) continue;
    const double* c = kColors[i % 6];
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    cairo_set_line_width(cr, 1.6);
    const Series& s = it->second;
    bool pen = false;
    for (size_t k = 0; k < s.x.size(); ++k) {
      if (!std::isfinite(s.y[k])) {
        pen = false;
        continue;
      }
      if (pen) cairo_line_to(cr, sx(s.x[k]), sy(s.y[k]));
      else cairo_move_to(cr, sx(s.x[k]), sy(s.y[k]));
      pen = true;
      if (s.x.size() < 40) {  // sparse series (evaluations): show the points
        cairo_stroke(cr);
        cairo_arc(cr, sx(s.x[k]), sy(s.y[k]), 2.5, 0, 2 * M_PI);
        cairo_fill(cr);
        cairo_move_to(cr, sx(s.x[k]), sy(s.y[k]));
      }
    }
    cairo_stroke(cr);
    cairo_rectangle(cr, lx, Y + 8, 14, 3);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.11, 0.14, 0.19);
    cairo_move_to(cr, lx + 18, Y + 13);
    cairo_show_text(cr, runs[i].name.c_str());
    cairo_text_extents_t e;
    cairo_text_extents(cr, runs[i].name.c_str(), &e);
    lx += 30 + e.x_advance;
  }
}

}  // namespace

PlotResult write_plot(const PlotOptions& o) {
  const bool svg = o.out.ends_with(".svg");
  if (!svg && !o.out.ends_with(".png"))
    fail("[plot] -o '" + o.out + "': the file must end in .png or .svg");
  if (o.width < 200 || o.height < 150 || o.width > 8000 || o.height > 8000)
    fail("[plot] --size must be between 200x150 and 8000x8000");
  PlotResult res;
  std::vector<Run> runs;
  for (const std::string& d : o.runs) {
    try {
      runs.push_back(read_run(d));
    } catch (const Error& e) {
      res.skipped.push_back(std::string("[plot] ") + e.what());
    }
  }
  if (runs.empty()) fail(res.skipped.empty() ? "[plot] no run directory given" : res.skipped[0]);
  std::set<std::string> known;
  for (const Run& r : runs)
    for (const auto& [k, s] : r.metrics) known.insert(k);
  std::vector<std::string> metrics = o.metrics;
  if (metrics.empty()) {
    metrics = {"loss"};
    if (known.count("val_loss")) metrics.push_back("val_loss");
  }
  for (const std::string& m : metrics)
    if (!known.count(m)) {
      std::string list;
      for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
      fail("[plot] no run has the metric '" + m + "' (known: " + list + ")");
    }
  // Drawn aside, then renamed: a failure leaves no half-written picture.
  const std::string tmp = o.out + ".tmp-plot";
  cairo_surface_t* surf = svg ? cairo_svg_surface_create(tmp.c_str(), o.width, o.height)
                              : cairo_image_surface_create(CAIRO_FORMAT_RGB24, o.width, o.height);
  cairo_t* cr = cairo_create(surf);
  cairo_set_source_rgb(cr, 0.97, 0.97, 0.98);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  const int n = (int)metrics.size();
  const double gap = 8, h = (o.height - gap * (n + 1)) / n;
  for (int i = 0; i < n; ++i)
    panel(cr, gap, gap + i * (h + gap), o.width - 2 * gap, h, metrics[(size_t)i], runs);
  cairo_destroy(cr);
  cairo_status_t st = CAIRO_STATUS_SUCCESS;
  if (!svg) st = cairo_surface_write_to_png(surf, tmp.c_str());
  cairo_surface_finish(surf);
  if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(surf);
  cairo_surface_destroy(surf);
  if (st != CAIRO_STATUS_SUCCESS) {
    std::filesystem::remove(tmp);
    fail("[plot] cannot write '" + o.out + "': " + cairo_status_to_string(st));
  }
  std::filesystem::rename(tmp, o.out);
  res.runs = (int)runs.size();
  return res;
}

}  // namespace tandem
