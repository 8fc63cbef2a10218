// Unit tests of the resilience pieces: the guard's robust score against a plain reference, the
// fault-spec parser's errors, the snapshot store's torn-slot handling, and the event log.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "../common/test_util.h"
#include "tandem/backend/backend.h"
#include "tandem/train/events.h"
#include "tandem/train/faults.h"
#include "tandem/train/guard.h"
#include "tandem/train/snapshot.h"
#include "tandem/train/straggler.h"

namespace tandem {
namespace {

double ref_median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

TEST(Guard, RobustScoreMatchesAPlainComputation) {
  std::deque<double> h;
  for (int i = 0; i < 37; ++i) h.push_back(5.0 - 0.02 * i + 0.1 * std::sin(i * 1.7));
  const double x = 6.1;
  std::vector<double> tail(h.end() - 10, h.end()), d;
  for (size_t i = 0; i + 1 < h.size(); ++i) d.push_back(h[i + 1] - h[i]);
  const double md = ref_median(d);
  std::vector<double> dev;
  for (double v : d) dev.push_back(std::fabs(v - md));
  const double want = (x - ref_median(tail)) / (1.4826 * ref_median(dev) / std::sqrt(2.0));
  EXPECT_NEAR(robust_z(h, x), want, 1e-9 * std::fabs(want));
}

TEST(Guard, FlagsNonFiniteAlwaysAndSpikesOnlyWithHistory) {
  GuardConfig c;
  c.min_history = 5;
  Guard g(c);
  EXPECT_EQ(g.check(std::nan(""), 1.0).kind, "non_finite");
  EXPECT_EQ(g.check(1.0, std::numeric_limits<double>::infinity()).kind, "non_finite");
  EXPECT_TRUE(g.check(100.0, 1.0).ok);  // no history yet: cannot judge a spike
  for (int i = 0; i < 30; ++i) g.accept(4.0 - 0.01 * i + 0.02 * (i % 3), 0.5 + 0.05 * (i % 4));
  EXPECT_TRUE(g.check(3.75, 0.6).ok);
  EXPECT_EQ(g.check(9.0, 0.6).kind, "loss_spike");
  EXPECT_EQ(g.check(3.75, 1e30).kind, "grad_spike");
}

TEST(Guard, StateRoundTripsExactlyThroughJson) {
  GuardConfig c;
  Guard a(c), b(c);
  for (int i = 0; i < 60; ++i) a.accept(1.0 / (i + 3), std::sqrt(i + 0.1));
  b.from_json(nlohmann::json::parse(a.to_json().dump()));
  EXPECT_EQ(a.to_json().dump(), b.to_json().dump());
  EXPECT_EQ(b.history_size(), (size_t)c.window);
  EXPECT_NE(test::error_of([&] { b.from_json({{"loss", {1.0}}}); }).find("malformed"),
            std::string::npos);
}

TEST(Faults, BadSpecsAreNamedErrors) {
  EXPECT_NE(test::error_of([] { FaultPlan::parse("meltdown@3"); }).find("unknown fault kind"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { FaultPlan::parse("crash"); }).find("KIND@WHEN"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { FaultPlan::parse("nan_grad@0"); }).find("'nan_grad@0'"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { FaultPlan::parse("bitflip_grad@4:40"); }).find("bit"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { FaultPlan::parse("crash@every:x"); }).find("every:"),
            std::string::npos);
  EXPECT_FALSE(FaultPlan::parse("crash@5, hang@7 ,crash@2.5s,crash@resume").empty());
  // Data-parallel kinds: a factor for slow_rank, 64-bit positions for bucket flips.
  EXPECT_NE(test::error_of([] { FaultPlan::parse("slow_rank@3"); }).find("slow_rank@FACTORx"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { FaultPlan::parse("slow_rank@0.5x"); }).find("1..1000"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { FaultPlan::parse("bitflip_bucket@4:64"); }).find("0..63"),
            std::string::npos);
  EXPECT_FALSE(FaultPlan::parse("bitflip_bucket@4:63,pause@3").empty());
}

TEST(Faults, ASlowRankIsSlowedOnlyOnItsRank) {
  FaultPlan p = FaultPlan::parse("rank1:slow_rank@3x,rank1:slow_rank@2x,rank2:slow_comm@0.5s");
  FaultPlan r0 = p, r1 = p;
  r0.set_rank(0);
  r1.set_rank(1);
  EXPECT_EQ(r0.slowdown(), 1.0);
  EXPECT_EQ(r1.slowdown(), 6.0);
  EXPECT_EQ(r1.comm_delay(), 0.0);
}

TEST(Stragglers, ARankPersistentlySlowerThanTheOthersIsReportedOnceThenRecovers) {
  StragglerWatch w(1.5, 3);
  // Rank 2 is 3x slower from the first step; one slow step of rank 0 is not persistent.
  EXPECT_TRUE(w.observe({1.0, 1.0, 3.0}).empty());
  EXPECT_TRUE(w.observe({4.0, 1.0, 3.0}).empty());
  auto c = w.observe({1.0, 1.1, 3.0});  // the window is full: rank 2's median ratio is 3
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].rank, 2);
  EXPECT_TRUE(c[0].slow);
  EXPECT_NEAR(c[0].ratio, 3.0 / 1.05, 0.2);
  EXPECT_DOUBLE_EQ(c[0].rank_s, 3.0);
  EXPECT_TRUE(w.slow(2));
  EXPECT_FALSE(w.slow(0));
  EXPECT_TRUE(w.observe({1.0, 1.0, 3.0}).empty());  // already reported
  EXPECT_TRUE(w.observe({1.0, 1.0, 1.0}).empty());  // one fast step: the median is still slow
  c = w.observe({1.0, 1.0, 1.0});
  ASSERT_EQ(c.size(), 1u);
  EXPECT_FALSE(c[0].slow);
  // A different group size starts afresh; so does factor 0 (off) and a group of one.
  EXPECT_TRUE(w.observe({1.0, 9.0}).empty());
  StragglerWatch off(0, 1);
  EXPECT_TRUE(off.observe({1.0, 9.0}).empty());
  StragglerWatch one(1.5, 1);
  EXPECT_TRUE(one.observe({9.0}).empty());
}

TEST(Faults, OneShotFaultsFireOnceAcrossProcesses) {
  test::TempDir dir;
  FaultPlan a = FaultPlan::parse("nan_grad@4,enospc@10,bad_batch@6");
  a.bind(dir.path().string(), nullptr);
  EXPECT_EQ(a.fire(FaultKind::kNanGrad, 3), nullptr);
  EXPECT_NE(a.fire(FaultKind::kNanGrad, 4), nullptr);
  EXPECT_EQ(a.fire(FaultKind::kNanGrad, 4), nullptr);
  EXPECT_EQ(a.fire(FaultKind::kEnospc, 9), nullptr);
  EXPECT_NE(a.fire(FaultKind::kEnospc, 12), nullptr);  // the first checkpoint at or after 10
  EXPECT_TRUE(a.poisoned_step(6));
  EXPECT_TRUE(a.poisoned_step(6));  // a bad batch stays bad
  FaultPlan b = FaultPlan::parse("nan_grad@4,enospc@10");
  b.bind(dir.path().string(), nullptr);  // a restarted process reads what already fired
  EXPECT_EQ(b.fire(FaultKind::kNanGrad, 4), nullptr);
  EXPECT_EQ(b.fire(FaultKind::kEnospc, 12), nullptr);
}

TEST(Snapshot, NewestCompleteSlotWinsAndATornSlotIsIgnored) {
  auto be = make_backend("cpu", 1);
  const size_t n = 1000;
  std::vector<float> p(n), m(n), v(n);
  auto fill = [&](float base) {
    for (size_t i = 0; i < n; ++i) p[i] = base + i, m[i] = -base - i, v[i] = base * 2 + i;
  };
  int fd = ::memfd_create("test-snapshot", 0);
  ASSERT_GE(fd, 0);
  {
    SnapshotStore s(fd, n);
    EXPECT_FALSE(s.latest_meta().has_value());
    fill(1);
    s.save(*be, p.data(), m.data(), v.data(), "{\"step\":1}");
    fill(2);
    s.save(*be, p.data(), m.data(), v.data(), "{\"step\":2}");
  }
  // A second process (a restart) maps the same memory and sees step 2.
  SnapshotStore s(fd, n);
  EXPECT_EQ(*s.latest_meta(), "{\"step\":2}");
  std::vector<float> q(n), qm(n), qv(n);
  EXPECT_EQ(*s.restore(*be, q.data(), qm.data(), qv.data()), "{\"step\":2}");
  EXPECT_EQ(q, p);
  EXPECT_EQ(qv, v);
  // A writer killed mid-copy leaves its slot's sequence odd: simulate by tearing slot 0
  // (which holds step 1, the one step 3 would overwrite) and check step 2 is still served.
  auto* base = static_cast<char*>(::mmap(nullptr, s.bytes(), PROT_READ | PROT_WRITE, MAP_SHARED,
                                         fd, 0));
  ASSERT_NE(base, MAP_FAILED);
  auto* seq0 = reinterpret_cast<uint64_t*>(base + 4096);
  *seq0 |= 1;
  EXPECT_EQ(*s.latest_meta(), "{\"step\":2}");
  ::munmap(base, s.bytes());
  ::close(fd);
}

TEST(Events, RecordsAreWholeLinesWithTimeAndKind) {
  test::TempDir dir;
  {
    EventLog log(dir.file("events.jsonl"));
    log.emit("rollback", {{"from_step", 5}, {"to_step", 4}});
    log.emit("hang");
  }
  test::write_text(dir.file("events.jsonl"),
                   test::read_bytes(dir.file("events.jsonl")) + "{\"t\": 1, \"ev");  // torn
  auto ev = read_events(dir.file("events.jsonl"));
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0]["event"], "rollback");
  EXPECT_EQ(ev[0]["to_step"], 4);
  EXPECT_GT(ev[1]["t"].get<double>(), 1.7e9);
}

}  // namespace
}  // namespace tandem
