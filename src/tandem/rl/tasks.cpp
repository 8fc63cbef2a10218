// Synthetic tasks (see tasks.h).
#include "tandem/rl/tasks.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/rng.h"

namespace tandem {
namespace {

constexpr uint64_t kStreamTask = 0x7461736bull;

struct Draw {
  uint64_t seed, index, k = 0;
  uint64_t next(uint64_t n) { return rng_u64(seed, kStreamTask, (index << 16) | k++) % n; }
};

TaskItem addition(Draw& d, int digits) {
  uint64_t lim = 1;
  for (int i = 0; i < digits; ++i) lim *= 10;
  const uint64_t a = d.next(lim), b = d.next(lim);
  TaskItem t;
  t.question = "What is " + std::to_string(a) + " + " + std::to_string(b) + "?";
  t.answer = std::to_string(a) + " + " + std::to_string(b) + " = " + std::to_string(a + b);
  t.reference = std::to_string(a + b);
  t.verifier = "exact_match";
  return t;
}

// A random expression over all the numbers (in a random order and grouping) whose value is a
// positive integer at most 999 without a fraction on the way; retried until one is.
TaskItem countdown(Draw& d, int digits) {
  const int top = 5 * std::max(1, digits);
  for (;;) {
    const int k = 3 + (int)d.next(2);
    std::vector<int64_t> nums;
    for (int i = 0; i < k; ++i) nums.push_back(1 + (int64_t)d.next((uint64_t)top));
    std::vector<std::pair<int64_t, std::string>> parts;
    for (int64_t n : nums) parts.push_back({n, std::to_string(n)});
    bool ok = true;
    while (parts.size() > 1 && ok) {
      const size_t i = d.next(parts.size());
      auto a = parts[i];
      parts.erase(parts.begin() + (ptrdiff_t)i);
      const size_t j = d.next(parts.size());
      auto b = parts[j];
      parts.erase(parts.begin() + (ptrdiff_t)j);
      const int op = (int)d.next(4);
      std::pair<int64_t, std::string> c;
      if (op == 0) c = {a.first + b.first, "(" + a.second + " + " + b.second + ")"};
      if (op == 1) c = {a.first - b.first, "(" + a.second + " - " + b.second + ")"};
      if (op == 2) c = {a.first * b.first, a.second + " * " + b.second};
      if (op == 3) {
        if (b.first == 0 || a.first % b.first != 0) {
          ok = false;
          break;
        }
        c = {a.first / b.first, "(" + a.second + " / " + b.second + ")"};
      }
      if (op == 2) c.second = "(" + c.second + ")";
      parts.push_back(c);
    }
    if (!ok || parts[0].first <= 0 || parts[0].first > 999) continue;
    std::string expr = parts[0].second;
    if (expr.size() > 2 && expr.front() == '(' && expr.back() == ')') expr = expr.substr(1, expr.size() - 2);
    std::string list;
    for (size_t i = 0; i < nums.size(); ++i) list += (i ? ", " : "") + std::to_string(nums[i]);
    TaskItem t;
    t.question = "Use " + list + " (each at most once) with + - * / to make " +
                 std::to_string(parts[0].first) + ".";
    t.answer = expr;
    t.reference = nlohmann::json({{"numbers", nums}, {"target", parts[0].first}}).dump();
    t.verifier = "countdown";
    return t;
  }
}

}  // namespace

std::vector<TaskItem> synth_task(const std::string& task, int count, uint64_t seed, int digits) {
  if (task != "addition" && task != "countdown")
    fail("[synth] unknown task '" + task + "' (expected addition or countdown)");
  if (digits < 1 || digits > 9) fail("[synth] --digits must be in 1..9");
  std::vector<TaskItem> out;
  std::set<std::string> seen;
  // Problems are drawn in order; a repeat is skipped, so the splits cut one list of distinct
  // problems. Small spaces run out: say so instead of looping.
  for (uint64_t i = 0; (int)out.size() < count; ++i) {
    if (i > (uint64_t)count * 50 + 1000)
      fail("[synth] the task has fewer than " + std::to_string(count) +
           " distinct problems at --digits " + std::to_string(digits) + ": raise --digits");
    Draw d{seed, i};
    TaskItem t = task == "addition" ? addition(d, digits) : countdown(d, digits);
    if (seen.insert(t.question).second) out.push_back(std::move(t));
  }
  return out;
}

void write_synth_task(const SynthOptions& o) {
  if (o.out_dir.empty()) fail("[synth] --out is required");
  if (path_exists(o.out_dir) && !o.overwrite)
    fail("[synth] '" + o.out_dir + "' exists (pass --overwrite to replace it)");
  const int total = o.sft_train + o.sft_val + o.rl_train + o.rl_val;
  if (o.sft_train < 1 || o.sft_val < 0 || o.rl_train < 0 || o.rl_val < 0 || o.corpus < 0)
    fail("[synth] the split sizes must not be negative and --sft-train at least 1");
  const std::vector<TaskItem> items = synth_task(o.task, total, o.seed, o.digits);
  const std::string tmp = o.out_dir + ".tmp-synth";
  std::filesystem::remove_all(tmp);
  make_dirs(tmp);
  size_t at = 0;
  auto write = [&](const std::string& name, int n, bool sft) {
    std::string text;
    for (int i = 0; i < n; ++i, ++at) {
      const TaskItem& t = items[at];
      nlohmann::json user = {{"role", "user"}, {"content", t.question}};
      nlohmann::json j;
      if (sft)
        j = {{"messages", {user, {{"role", "assistant"}, {"content", t.answer}}}},
             {"reference", t.reference}};
      else
        j = {{"messages", {user}}, {"reference", t.reference}};
      text += j.dump() + "\n";
    }
    atomic_write_file(tmp + "/" + name, text);
  };
  write("sft_train.jsonl", o.sft_train, true);
  write("sft_val.jsonl", o.sft_val, true);
  write("rl_train.jsonl", o.rl_train, false);
  write("rl_val.jsonl", o.rl_val, false);
  if (o.corpus > 0) {
    // Unlabelled text for pre-training: solved problems, several to a document (one per
    // line), with no chat turns. Drawn with repeats from their own stream; never a held-out
    // problem (sft_val, rl_val), which are what the pipeline's accuracy is measured on.
    constexpr int kFactsPerDoc = 8;
    std::set<std::string> held_out;
    for (int i = o.sft_train; i < o.sft_train + o.sft_val; ++i) held_out.insert(items[(size_t)i].question);
    for (int i = total - o.rl_val; i < total; ++i) held_out.insert(items[(size_t)i].question);
    std::string text;
    uint64_t i = 0;
    for (int doc = 0; doc < o.corpus; ++doc) {
      for (int k = 0; k < kFactsPerDoc;) {
        if (i > (uint64_t)o.corpus * kFactsPerDoc * 50 + 1000)
          fail("[synth] too few problems outside the held-out splits for --corpus");
        Draw d{o.seed ^ 0x636f72707573ull, i++};
        const TaskItem t = o.task == "addition" ? addition(d, o.digits) : countdown(d, o.digits);
        if (held_out.count(t.question)) continue;
        text += (k++ ? " " : "") + t.answer + ".";
      }
      text += "\n";
    }
    atomic_write_file(tmp + "/corpus.txt", text);
  }
  atomic_write_file(tmp + "/task.json",
                    nlohmann::json({{"task", o.task}, {"seed", o.seed}, {"digits", o.digits},
                                    {"verifier", items[0].verifier}, {"sft_train", o.sft_train},
                                    {"sft_val", o.sft_val}, {"rl_train", o.rl_train},
                                    {"rl_val", o.rl_val}, {"corpus_documents", o.corpus}})
                            .dump(2) + "\n");
  std::filesystem::remove_all(o.out_dir);
  std::filesystem::rename(tmp, o.out_dir);
}

}  // namespace tandem
