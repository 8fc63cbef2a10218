// `tandem plot`: a PNG of the stated size whose plotted pixels follow the data, an SVG, and
// the bad inputs (a metric no run has, a directory that is not a run, a bad file name).
#include <cairo.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/dashboard/plot.h"

namespace tandem::test {
namespace {

namespace fs = std::filesystem;

class PlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tandem_plot_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // A run directory whose loss is f(step), with a restart at step 30 and a torn last line.
  std::string run(const std::string& name, double (*f)(int)) {
    const fs::path d = dir_ / name;
    fs::create_directories(d);
    std::ofstream m(d / "metrics.jsonl");
    for (int s = 1; s <= 60; ++s) m << "{\"step\":" << s << ",\"loss\":" << f(s) << "}\n";
    m << "{\"step\":61,\"lo";
    std::ofstream e(d / "events.jsonl");
    e << "{\"t\":1,\"event\":\"restart\",\"step\":30}\n";
    return d.string();
  }
  std::vector<uint32_t> pixels(const std::string& png, int* w, int* h) {
    cairo_surface_t* s = cairo_image_surface_create_from_png(png.c_str());
    EXPECT_EQ(cairo_surface_status(s), CAIRO_STATUS_SUCCESS);
    *w = cairo_image_surface_get_width(s);
    *h = cairo_image_surface_get_height(s);
    const int stride = cairo_image_surface_get_stride(s);
    const unsigned char* data = cairo_image_surface_get_data(s);
    std::vector<uint32_t> px;
    for (int y = 0; y < *h; ++y)
      for (int x = 0; x < *w; ++x) px.push_back(((const uint32_t*)(data + y * stride))[x] & 0xffffff);
    cairo_surface_destroy(s);
    return px;
  }
  fs::path dir_;
};

// Pixels of the first run's colour (the plotted line).
int line_pixels(const std::vector<uint32_t>& px) {
  int n = 0;
  for (uint32_t p : px) {
    const int r = p >> 16 & 255, b = p & 255;
    n += b > 150 && r < 120 && b - r > 60;
  }
  return n;
}

TEST_F(PlotTest, APngOfTheStatedSizeWhosePlottedPixelsFollowTheData) {
  const std::string falling = run("falling", [](int s) { return 5.0 / s; });
  const std::string wave = run("wave", [](int s) { return std::sin(s / 5.0); });
  PlotOptions o;
  o.width = 640;
  o.height = 360;
  o.metrics = {"loss"};
  o.runs = {falling};
  o.out = (dir_ / "a.png").string();
  EXPECT_EQ(write_plot(o).runs, 1);
  o.runs = {wave};
  o.out = (dir_ / "b.png").string();
  write_plot(o);
  int w = 0, h = 0;
  const auto a = pixels((dir_ / "a.png").string(), &w, &h);
  EXPECT_EQ(w, 640);
  EXPECT_EQ(h, 360);
  const auto b = pixels((dir_ / "b.png").string(), &w, &h);
  EXPECT_GT(line_pixels(a), 200) << "the curve is drawn";
  EXPECT_GT(line_pixels(b), 200);
  // The same frame, other data: the line's pixels are elsewhere.
  int differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
  EXPECT_GT(differ, 500);
  // Deterministic: the same data draws the same picture.
  o.runs = {falling};
  o.out = (dir_ / "c.png").string();
  write_plot(o);
  EXPECT_EQ(pixels((dir_ / "c.png").string(), &w, &h), a);
}

TEST_F(PlotTest, AnSvgAndSeveralRunsWithTheBadOneSkipped) {
  PlotOptions o;
  o.runs = {run("one", [](int s) { return 1.0 / s; }), run("two", [](int s) { return 2.0 / s; }),
            (dir_ / "nope").string()};
  o.out = (dir_ / "p.svg").string();
  const PlotResult r = write_plot(o);
  EXPECT_EQ(r.runs, 2);
  ASSERT_EQ(r.skipped.size(), 1u);
  EXPECT_NE(r.skipped[0].find("not a directory"), std::string::npos);
  const std::string svg = read_file(o.out);
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_FALSE(fs::exists(o.out + ".tmp-plot"));
}

TEST_F(PlotTest, BadInputIsOneErrorAndNoFile) {
  PlotOptions o;
  o.runs = {run("r", [](int s) { return 1.0 / s; })};
  o.metrics = {"loss", "reward"};
  o.out = (dir_ / "x.png").string();
  try {
    write_plot(o);
    FAIL() << "a metric no run has";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'reward' (known: loss)"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(o.out));
  o.metrics = {"loss"};
  o.out = (dir_ / "x.jpg").string();
  EXPECT_THROW(write_plot(o), Error);
  fs::create_directories(dir_ / "empty");
  o.runs = {(dir_ / "empty").string()};
  o.out = (dir_ / "x.png").string();
  try {
    write_plot(o);
    FAIL() << "no run to draw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a run directory"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(o.out));
}

}  // namespace
}  // namespace tandem::test
