// Verifiers: final-answer extraction and normalisation, the regex check, the countdown parser
// against hand-worked expressions, and an external command that answers, crashes, hangs,
// prints garbage or miscounts.
#include <gtest/gtest.h>

#include "../common/test_util.h"
#include <set>

#include "tandem/rl/countdown.h"
#include "tandem/rl/tasks.h"
#include "tandem/rl/verifier.h"

namespace tandem {
namespace {

using test::error_of;

VerifierSpec spec_of(const std::string& name, const std::string& kind) {
  VerifierSpec s;
  s.name = name;
  s.kind = kind;
  return s;
}

std::vector<Sample> samples(std::vector<std::pair<std::string, std::string>> cr) {
  std::vector<Sample> out;
  for (auto& [c, r] : cr) out.push_back({"prompt", c, r});
  return out;
}

TEST(FinalAnswer, MarkersThenTheLastNumber) {
  EXPECT_EQ(final_answer("so the Answer: 42."), "42.");
  EXPECT_EQ(final_answer("work... #### 1,000\n"), "1,000");
  EXPECT_EQ(final_answer("thus \\boxed{7} done"), "7");
  EXPECT_EQ(final_answer("first 3, then 5 apples"), "5");
  EXPECT_EQ(final_answer("no digits here"), std::nullopt);
  EXPECT_TRUE(same_answer("1,000", "1000.0"));
  EXPECT_TRUE(same_answer("$5", "5"));
  EXPECT_TRUE(same_answer("42.", "42"));
  EXPECT_TRUE(same_answer("+1e3", "1000"));
  EXPECT_TRUE(same_answer(" Paris ", "paris"));
  EXPECT_FALSE(same_answer("5", "6"));
  EXPECT_FALSE(same_answer("five", "5"));
}

TEST(Verifiers, ExactMatchAndRegex) {
  auto em = make_verifier(spec_of("em", "exact_match"));
  EXPECT_EQ(em->score(samples({{"it is 12", "12"}, {"answer: 13", "12"}, {"none", "12"}})),
            (std::vector<double>{1, 0, 0}));
  VerifierSpec rs = spec_of("format", "regex");
  rs.pattern = R"(answer: \d+$)";
  auto re = make_verifier(rs);
  EXPECT_EQ(re->score(samples({{"x answer: 12", ""}, {"answer: twelve", ""}})),
            (std::vector<double>{1, 0}));
  rs.pattern = "(unclosed";
  EXPECT_NE(error_of([&] { make_verifier(rs); }).find("format: pattern '(unclosed'"),
            std::string::npos);
  EXPECT_NE(error_of([] { make_verifier(spec_of("v", "oracle")); }).find("unknown kind 'oracle'"),
            std::string::npos);
}

TEST(Countdown, ExpressionsAreParsedAndEvaluatedExactly) {
  const CountdownProblem p{{3, 5, 7}, 56};
  EXPECT_TRUE(check_countdown("(3 + 5) * 7", p).reached);
  EXPECT_TRUE(check_countdown("7*(5+3) = 56", p).reached);
  auto c = check_countdown("3 * 5 * 7", p);
  EXPECT_TRUE(c.parsed && c.numbers_ok && !c.reached);
  EXPECT_NE(c.detail.find("reaches 105"), std::string::npos);
  c = check_countdown("(3 + 3) * 7", p);  // 3 twice
  EXPECT_FALSE(c.numbers_ok);
  c = check_countdown("56", p);
  EXPECT_FALSE(c.numbers_ok);
  EXPECT_FALSE(check_countdown("(3 + 5", p).parsed);
  EXPECT_FALSE(check_countdown("7 / (5 - 5)", p).parsed);  // division by zero
  EXPECT_FALSE(check_countdown("import os", p).parsed);
  EXPECT_FALSE(check_countdown("", p).parsed);
  // Fractions on the way are exact: 6 / (1 - 3/4) = 24.
  EXPECT_TRUE(check_countdown("6 / (1 - 3 / 4)", {{1, 3, 4, 6}, 24}).reached);
  EXPECT_FALSE(check_countdown("7 / 2 * 2", {{7, 2, 2}, 6}).reached);  // 7, not 6
  auto v = make_verifier(spec_of("cd", "countdown"));
  const std::string ref = R"({"numbers": [3, 5, 7], "target": 56})";
  EXPECT_EQ(v->score(samples({{"Let me see.\n(3 + 5) * 7", ref}, {"answer: 3 * 5 * 7", ref}})),
            (std::vector<double>{1, 0}));
  EXPECT_NE(error_of([&] { v->score(samples({{"1", "not json"}})); }).find("countdown reference"),
            std::string::npos);
}

TEST(Verifiers, AnExternalCommandScoresOrFailsWithItsName) {
  auto spec = [](const std::string& cmd, double timeout = 30, const std::string& on_error = "stop") {
    VerifierSpec s = spec_of("checker", "command");
    s.command = cmd;
    s.timeout_s = timeout;
    s.on_error = on_error;
    return s;
  };
  const auto batch = samples({{"a", "1"}, {"b", "2"}});
  // A checker that reads each JSON line and answers: the reward is 1 when the completion is a.
  auto ok = make_verifier(spec("while read -r l; do case \"$l\" in *'\"completion\":\"a\"'*) echo 1;; "
                               "*) echo '{\"reward\": 0.25}';; esac; done"));
  EXPECT_EQ(ok->score(batch), (std::vector<double>{1, 0.25}));
  auto err = [&](const VerifierSpec& s) {
    return error_of([&] { make_verifier(s)->score(batch); });
  };
  std::string e = err(spec("echo broken >&2; exit 3"));
  EXPECT_NE(e.find("[verifier] checker (echo broken >&2; exit 3): exited with status 3: broken"),
            std::string::npos) << e;
  e = err(spec("sleep 100", 0.3));
  EXPECT_NE(e.find("gave no answer within 0.3 s"), std::string::npos) << e;
  e = err(spec("cat"));  // echoes the JSON back: not rewards
  EXPECT_NE(e.find("line 1 of its output is not a reward"), std::string::npos) << e;
  e = err(spec("echo 1"));
  EXPECT_NE(e.find("gave 1 rewards for 2 samples"), std::string::npos) << e;
  e = err(spec("kill -9 $$"));
  EXPECT_NE(e.find("killed by signal 9"), std::string::npos) << e;
  // on_error = zero: the batch scores 0 and the reason is given.
  std::string why;
  EXPECT_EQ(make_verifier(spec("exit 1", 30, "zero"))->score(batch, &why),
            (std::vector<double>{0, 0}));
  EXPECT_NE(why.find("exited with status 1"), std::string::npos);
  EXPECT_NE(error_of([&] { make_verifier(spec("true", 1, "ignore")); }).find("on_error"),
            std::string::npos);
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

TEST(Tasks, SynthesizedProblemsAreDistinctReproducibleAndSolvedByTheirAnswers) {
  for (const std::string task : {"addition", "countdown"}) {
    auto a = synth_task(task, 300, 7, 2);
    auto b = synth_task(task, 300, 7, 2);
    ASSERT_EQ(a.size(), 300u);
    std::set<std::string> q;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].question, b[i].question);
      q.insert(a[i].question);
    }
    EXPECT_EQ(q.size(), a.size()) << task;  // no problem twice
    EXPECT_NE(synth_task(task, 5, 8, 2)[0].question, a[0].question);
    // The written answer earns the reward, a wrong one does not.
    auto v = make_verifier(spec_of(task, a[0].verifier));
    std::vector<Sample> s;
    for (const auto& t : a) s.push_back({t.question, t.answer, t.reference});
    for (double r : v->score(s)) EXPECT_EQ(r, 1.0) << task;
    s[0].completion = "answer: 100000";
    EXPECT_EQ(v->score({s[0]})[0], 0.0);
  }
  EXPECT_NE(error_of([] { synth_task("chess", 1, 1, 2); }).find("unknown task 'chess'"),
            std::string::npos);
  EXPECT_NE(error_of([] { synth_task("addition", 500, 1, 1); }).find("fewer than 500 distinct"),
            std::string::npos);
}

}  // namespace
}  // namespace tandem
