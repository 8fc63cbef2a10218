// DashboardServer (see server.h).
#include "tandem/dashboard/server.h"

#include <httplib.h>

#include <filesystem>
#include <fstream>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/dashboard/assets.h"
#include "tandem/train/status.h"

namespace tandem {
namespace {

// Complete lines of `path` from byte `from` on, as JSON records; a torn last line (a run still
// writing it) is left for the next poll. `next` receives the offset after the last whole line.
nlohmann::json read_records(const std::string& path, int64_t from, int64_t& next, bool& reset,
                            int& bad_lines) {
  nlohmann::json out = nlohmann::json::array();
  std::error_code ec;
  const int64_t size = (int64_t)std::filesystem::file_size(path, ec);
  if (ec) {
    next = 0;
    return out;
  }
  if (size < from) from = 0, reset = true;  // rewritten shorter (metrics after a rollback)
  std::ifstream in(path, std::ios::binary);
  in.seekg(from);
  std::string text((size_t)(size - from), '\0');
  in.read(text.data(), (std::streamsize)text.size());
  text.resize((size_t)in.gcount());
  const size_t end = text.rfind('\n');
  next = from;
  if (end == std::string::npos) return out;
  size_t a = 0;
  while (a <= end) {
    const size_t b = text.find('\n', a);
    const std::string line = text.substr(a, b - a);
    a = b + 1;
    if (line.empty()) continue;
    try {
      out.push_back(nlohmann::json::parse(line));
    } catch (const std::exception&) {
      ++bad_lines;  // not a record: said once in the reply, the rest still shown
    }
  }
  next = from + (int64_t)end + 1;
  return out;
}

// What the run's first train_start event says about its hardware and kernels.
std::string backend_of(const std::string& dir) {
  std::ifstream in(dir + "/events.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("\"train_start\"") == std::string::npos) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      return j.value("backend", "");
    } catch (const std::exception&) {
    }
  }
  return "";
}

}  // namespace

nlohmann::json dashboard_runs(const std::vector<std::string>& runs) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string& dir = runs[i];
    std::string name = std::filesystem::path(dir).lexically_normal().filename().string();
    if (name.empty()) name = std::filesystem::path(dir).lexically_normal().parent_path().filename().string();
    nlohmann::json r = {{"id", i}, {"name", name}, {"dir", dir}};
    try {
      if (!std::filesystem::is_directory(dir))
        fail("'" + dir + "' is not a directory");
      if (!path_exists(dir + "/events.jsonl") && !path_exists(dir + "/metrics.jsonl"))
        fail("'" + dir + "' is not a run directory (no events.jsonl or metrics.jsonl yet)");
      const RunStatus st = read_run_status(dir);
      r["status"] = st.to_json();
      r["goodput"] = st.goodput();
      r["backend"] = backend_of(dir);
    } catch (const std::exception& e) {
      r["error"] = e.what();
    }
    out.push_back(r);
  }
  return out;
}

nlohmann::json dashboard_data(const std::string& dir, const nlohmann::json& offsets) {
  nlohmann::json out = nlohmann::json::object();
  nlohmann::json next = nlohmann::json::object();
  int bad = 0;
  for (const char* f : {"metrics", "timing", "events"}) {
    const int64_t from = offsets.contains(f) ? offsets[f].get<int64_t>() : 0;
    int64_t to = 0;
    bool reset = false;
    out[f] = read_records(dir + "/" + f + ".jsonl", from, to, reset, bad);
    if (reset) out[std::string(f) + "_reset"] = true;
    next[f] = to;
  }
  out["offsets"] = next;
  if (bad > 0) out["warning"] = std::to_string(bad) + " line(s) that are not JSON records were skipped";
  return out;
}

struct DashboardServer::Impl {
  DashboardOptions opt;
  httplib::Server svr;
  int port = 0;
};

DashboardServer::DashboardServer(const DashboardOptions& o) : impl_(std::make_unique<Impl>()) {
  impl_->opt = o;
  if (o.runs.empty()) fail("[dashboard] name at least one run directory");
  httplib::Server& svr = impl_->svr;
  const DashboardOptions& opt = impl_->opt;
  svr.set_pre_routing_handler([&opt](const httplib::Request& req, httplib::Response& res) {
    if (opt.api_key.empty() || req.path.rfind("/api/", 0) != 0)
      return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + opt.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    res.set_content("{\"error\": \"a valid API key is required: send 'Authorization: Bearer KEY' "
                    "(open the page as /#key=KEY)\"}", "application/json");
    return httplib::Server::HandlerResponse::Handled;
  });
  for (const Asset& a : dashboard_assets()) {
    const std::string name = a.name;
    const std::string type = name.ends_with(".html") ? "text/html; charset=utf-8"
                             : name.ends_with(".js") ? "application/javascript"
                                                     : "text/css";
    const std::string body(a.data, a.size);
    auto h = [body, type](const httplib::Request&, httplib::Response& res) {
      res.set_content(body, type);
    };
    svr.Get("/" + name, h);
    if (name == "index.html") svr.Get("/", h);
  }
  svr.Get("/favicon.ico", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  svr.Get("/api/runs", [&opt](const httplib::Request&, httplib::Response& res) {
    res.set_content(dashboard_runs(opt.runs).dump(), "application/json");
  });
  svr.Get(R"(/api/runs/(\d+)/data)", [&opt](const httplib::Request& req, httplib::Response& res) {
    const size_t i = std::stoul(req.matches[1]);
    if (i >= opt.runs.size()) {
      res.status = 404;
      res.set_content("{\"error\": \"no run " + std::to_string(i) + "\"}", "application/json");
      return;
    }
    nlohmann::json off = nlohmann::json::object();
    for (const char* f : {"metrics", "timing", "events"})
      if (req.has_param(f)) {
        try {
          off[f] = std::stoll(req.get_param_value(f));
        } catch (const std::exception&) {
          res.status = 400;
          res.set_content(std::string("{\"error\": \"offset '") + f + "' must be an integer\"}",
                          "application/json");
          return;
        }
      }
    res.set_content(dashboard_data(opt.runs[i], off).dump(), "application/json");
  });
  impl_->port = o.port == 0 ? svr.bind_to_any_port(o.host)
                            : (svr.bind_to_port(o.host, o.port) ? o.port : -1);
  if (impl_->port <= 0)
    fail("[dashboard] cannot listen on " + o.host + ":" + std::to_string(o.port));
}

DashboardServer::~DashboardServer() = default;
int DashboardServer::port() const { return impl_->port; }
void DashboardServer::run() { impl_->svr.listen_after_bind(); }
void DashboardServer::stop() { impl_->svr.stop(); }

}  // namespace tandem
