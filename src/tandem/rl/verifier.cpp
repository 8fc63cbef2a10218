// The built-in verifiers and the external command (see verifier.h).
#include "tandem/rl/verifier.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "tandem/core/error.h"
#include "tandem/rl/countdown.h"

namespace tandem {
namespace {

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace((unsigned char)s[a])) ++a;
  while (b > a && std::isspace((unsigned char)s[b - 1])) --b;
  return s.substr(a, b - a);
}

std::string lower(std::string s) {
  for (char& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

// A number written in any of the usual ways, or nullopt.
std::optional<double> as_number(std::string s) {
  s = trim(s);
  while (!s.empty() && (s.back() == '.' || s.back() == '$' || s.back() == '%')) s.pop_back();
  if (!s.empty() && s[0] == '$') s.erase(0, 1);
  s.erase(std::remove(s.begin(), s.end(), ','), s.end());
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (!end || *end || !std::isfinite(v)) return std::nullopt;
  return v;
}

// The text after the last `marker` (case-insensitive), up to the end of its line.
std::optional<std::string> after_marker(const std::string& text, const std::string& marker) {
  const std::string l = lower(text);
  const size_t at = l.rfind(marker);
  if (at == std::string::npos) return std::nullopt;
  std::string rest = text.substr(at + marker.size());
  const size_t nl = rest.find('\n');
  return trim(nl == std::string::npos ? rest : rest.substr(0, nl));
}

std::string expression_of(const std::string& completion) {
  if (auto a = after_marker(completion, "answer:")) return *a;
  std::string last;
  size_t pos = 0;
  while (pos <= completion.size()) {
    const size_t nl = completion.find('\n', pos);
    const std::string line = trim(completion.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
    if (!line.empty()) last = line;
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return last;
}

class ExactMatch : public Verifier {
 public:
  explicit ExactMatch(std::string n) { name_ = std::move(n); }
  std::vector<double> score(const std::vector<Sample>& batch, std::string*) override {
    std::vector<double> r;
    for (const Sample& s : batch) {
      const auto got = final_answer(s.completion);
      r.push_back(got && same_answer(*got, s.reference) ? 1.0 : 0.0);
    }
    return r;
  }
};

class RegexCheck : public Verifier {
 public:
  RegexCheck(std::string n, const std::string& pattern) {
    name_ = std::move(n);
    try {
      re_ = std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      fail("[verifier] " + name_ + ": pattern '" + pattern + "' is not a regular expression (" +
           e.what() + ")");
    }
  }
  std::vector<double> score(const std::vector<Sample>& batch, std::string*) override {
    std::vector<double> r;
    for (const Sample& s : batch) r.push_back(std::regex_search(s.completion, re_) ? 1.0 : 0.0);
    return r;
  }

 private:
  std::regex re_;
};

class Countdown : public Verifier {
 public:
  explicit Countdown(std::string n) { name_ = std::move(n); }
  std::vector<double> score(const std::vector<Sample>& batch, std::string*) override {
    std::vector<double> r;
    for (const Sample& s : batch) {
      const CountdownProblem p = parse_countdown_reference(s.reference);
      r.push_back(check_countdown(expression_of(s.completion), p).reached ? 1.0 : 0.0);
    }
    return r;
  }
};

// An external checker: /bin/sh -c COMMAND, the batch as JSONL on its stdin, one reward per
// line on its stdout (a number, or {"reward": x}), within the timeout, exit status 0.
class Command : public Verifier {
 public:
  explicit Command(const VerifierSpec& s) : spec_(s) {
    name_ = s.name;
    if (s.command.empty()) fail("[verifier] " + name_ + ": kind 'command' needs a command");
    if (s.on_error != "stop" && s.on_error != "zero")
      fail("[verifier] " + name_ + ": on_error must be \"stop\" or \"zero\", not \"" +
           s.on_error + "\"");
  }

  std::vector<double> score(const std::vector<Sample>& batch, std::string* why) override {
    std::string input;
    for (const Sample& s : batch)
      input += nlohmann::json({{"prompt", s.prompt}, {"completion", s.completion},
                               {"reference", s.reference}})
                   .dump() +
               "\n";
    std::string problem;
    std::vector<double> r = run(input, batch.size(), problem);
    if (problem.empty()) return r;
    const std::string msg = "[verifier] " + name_ + " (" + spec_.command + "): " + problem;
    if (spec_.on_error == "stop") fail(msg);
    if (why) *why = msg;
    return std::vector<double>(batch.size(), 0.0);
  }

 private:
  std::vector<double> run(const std::string& input, size_t n, std::string& problem) {
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC))
      fail(std::string("[verifier] pipe: ") + std::strerror(errno));
    const pid_t pid = ::fork();
    if (pid < 0) fail(std::string("[verifier] fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::setpgid(0, 0);  // its own group: a timeout kills whatever it started too
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      ::execl("/bin/sh", "sh", "-c", spec_.command.c_str(), (char*)nullptr);
      ::_exit(127);
    }
    ::setpgid(pid, pid);
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    // The input goes in from a thread of its own: a command that does not read it must not
    // block the reading of its output.
    std::thread writer([fd = in[1], &input] {
      ::signal(SIGPIPE, SIG_IGN);
      size_t off = 0;
      while (off < input.size()) {
        const ssize_t w = ::write(fd, input.data() + off, input.size() - off);
        if (w <= 0) break;
        off += (size_t)w;
      }
      ::close(fd);
    });
    std::string stdout_text, stderr_text;
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds((int64_t)(spec_.timeout_s * 1000));
    bool open_out = true, open_err = true, timed_out = false;
    while (open_out || open_err) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) {
        timed_out = true;
        break;
      }
      pollfd p[2] = {{open_out ? out[0] : -1, POLLIN, 0}, {open_err ? err[0] : -1, POLLIN, 0}};
      ::poll(p, 2, (int)std::min<int64_t>(left, 1000));
      char buf[4096];
      for (int k = 0; k < 2; ++k) {
        if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const ssize_t got = ::read(p[k].fd, buf, sizeof buf);
        if (got <= 0) {
          (k == 0 ? open_out : open_err) = false;
        } else {
          std::string& dst = k == 0 ? stdout_text : stderr_text;
          if (dst.size() < (64u << 20)) dst.append(buf, (size_t)got);
        }
      }
    }
    if (timed_out) ::kill(-pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (timed_out) ::kill(-pid, SIGKILL);  // what it left behind
    ::close(out[0]);
    ::close(err[0]);
    writer.join();
    const std::string tail = trim(stderr_text.size() > 500 ? stderr_text.substr(stderr_text.size() - 500) : stderr_text);
    if (timed_out) {
      char b[64];
      std::snprintf(b, sizeof b, "gave no answer within %.3g s", spec_.timeout_s);
      problem = b;
      return {};
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      problem = WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status))
                                    : "exited with status " + std::to_string(WEXITSTATUS(status));
      if (!tail.empty()) problem += ": " + tail;
      return {};
    }
    std::vector<double> r;
    size_t pos = 0, line_no = 0;
    while (pos < stdout_text.size()) {
      const size_t nl = stdout_text.find('\n', pos);
      const std::string line = trim(stdout_text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
      pos = nl == std::string::npos ? stdout_text.size() : nl + 1;
      ++line_no;
      if (line.empty()) continue;
      std::optional<double> v = as_number(line);
      if (!v) {
        try {
          const auto j = nlohmann::json::parse(line);
          if (j.is_object() && j.contains("reward") && j["reward"].is_number())
            v = j["reward"].get<double>();
        } catch (const std::exception&) {
        }
      }
      if (!v || !std::isfinite(*v)) {
        problem = "line " + std::to_string(line_no) + " of its output is not a reward: '" +
                  line.substr(0, 80) + "' (expected a number or {\"reward\": x})";
        return {};
      }
      r.push_back(*v);
    }
    if (r.size() != n) {
      problem = "gave " + std::to_string(r.size()) + " rewards for " + std::to_string(n) +
                " samples";
      return {};
    }
    return r;
  }

  VerifierSpec spec_;
};

}  // namespace

std::optional<std::string> final_answer(const std::string& completion) {
  if (auto a = after_marker(completion, "\\boxed{")) {
    const size_t close = a->find('}');
    return trim(close == std::string::npos ? *a : a->substr(0, close));
  }
  for (const char* m : {"####", "answer:"})
    if (auto a = after_marker(completion, m); a && !a->empty()) return *a;
  // Else the last number in the text.
  static const std::regex num(R"([-+]?\$?\d[\d,]*(\.\d+)?([eE][-+]?\d+)?)");
  std::optional<std::string> last;
  for (auto it = std::sregex_iterator(completion.begin(), completion.end(), num);
       it != std::sregex_iterator(); ++it)
    last = it->str();
  return last;
}

bool same_answer(const std::string& a, const std::string& b) {
  const auto x = as_number(a), y = as_number(b);
  if (x && y) return *x == *y || std::fabs(*x - *y) <= 1e-9 * std::max(std::fabs(*x), std::fabs(*y));
  return lower(trim(a)) == lower(trim(b));
}

std::unique_ptr<Verifier> make_verifier(const VerifierSpec& s) {
  const std::string name = s.name.empty() ? s.kind : s.name;
  if (s.kind == "exact_match") return std::make_unique<ExactMatch>(name);
  if (s.kind == "regex") return std::make_unique<RegexCheck>(name, s.pattern);
  if (s.kind == "countdown") return std::make_unique<Countdown>(name);
  if (s.kind == "command") {
    VerifierSpec c = s;
    c.name = name;
    return std::make_unique<Command>(c);
  }
  fail("[verifier] " + name + ": unknown kind '" + s.kind +
       "' (expected exact_match, regex, countdown or command)");
}

}  // namespace tandem
