// The rendezvous server and client: groups form with every rank in its place, the store
// carries values between ranks, and each bad start gets one error that names the problem.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "tandem/core/error.h"
#include "tandem/dist/rendezvous.h"

using namespace tandem;
using std::chrono::milliseconds;

namespace {

Fingerprint fp(const std::string& config) { return Fingerprint{{{"config", config}, {"binary", "b1"}}}; }

std::string addr(const RendezvousServer& s) { return "127.0.0.1:" + std::to_string(s.port()); }

}  // namespace

TEST(Rendezvous, AGroupFormsWithEveryRankInItsPlace) {
  RendezvousServer srv({"127.0.0.1", 0, 3});
  std::vector<GroupInfo> got(3);
  std::vector<std::thread> ts;
  for (int r : {2, 0, 1})
    ts.emplace_back([&, r] { got[r] = RendezvousClient(addr(srv)).join(r, fp("c"), milliseconds(30000)); });
  for (auto& t : ts) t.join();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(got[r].rank, r);
    EXPECT_EQ(got[r].world, 3);
    EXPECT_EQ(got[r].generation, got[0].generation);
  }
  RendezvousClient a(addr(srv)), b(addr(srv));
  std::thread setter([&] { a.set("k/x", {'h', 'i'}); });
  EXPECT_EQ(b.get("k/x", milliseconds(30000)), (std::vector<char>{'h', 'i'}));
  setter.join();
}

TEST(Rendezvous, ADifferentConfigIsRefusedForEveryRankWithTheDifferenceNamed) {
  RendezvousServer srv({"127.0.0.1", 0, 2});
  std::string e0, e1;
  std::thread t0([&] {
    try {
      RendezvousClient(addr(srv)).join(0, fp("aaa"), milliseconds(30000));
    } catch (const Error& e) {
      e0 = e.what();
    }
  });
  // Whichever joins first is the reference; the message names both values either way.
  try {
    RendezvousClient c(addr(srv));
    c.join(1, fp("bbb"), milliseconds(30000));
  } catch (const Error& e) {
    e1 = e.what();
  }
  t0.join();
  for (const std::string& e : {e0, e1}) {
    EXPECT_NE(e.find("refused at rendezvous"), std::string::npos) << e;
    EXPECT_NE(e.find("different config"), std::string::npos) << e;
    EXPECT_NE(e.find("aaa"), std::string::npos) << e;
    EXPECT_NE(e.find("bbb"), std::string::npos) << e;
  }
}

TEST(Rendezvous, APortInUseIsNamed) {
  RendezvousServer first({"127.0.0.1", 0, 1});
  try {
    RendezvousServer second({"127.0.0.1", first.port(), 1});
    FAIL() << "two servers on one port";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(":" + std::to_string(first.port())), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos);
  }
}

TEST(Rendezvous, AnUnreachableServerAndAMalformedAddressAreNamed) {
  int port;
  { RendezvousServer gone({"127.0.0.1", 0, 1}); port = gone.port(); }  // nothing listens now
  try {
    RendezvousClient("127.0.0.1:" + std::to_string(port)).join(0, fp("c"), milliseconds(300));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach the rendezvous server at 127.0.0.1:" +
                                         std::to_string(port)), std::string::npos) << e.what();
  }
  EXPECT_THROW(RendezvousClient("localhost"), Error);
  EXPECT_THROW(RendezvousClient("localhost:99999"), Error);
}

TEST(Rendezvous, AGroupThatDoesNotFillSaysHowManyCame) {
  RendezvousServer srv({"127.0.0.1", 0, 2});
  try {
    RendezvousClient(addr(srv)).join(0, fp("c"), milliseconds(200));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1 of 2 ranks joined"), std::string::npos) << e.what();
  }
}

TEST(Rendezvous, MissingRanksLeaveTheLargestGroupThatSplitsTheBatch) {
  // 4 expected, 3 come; the batch has 4 shards: a group of 2 forms from the lowest ranks, and
  // the third keeps waiting for a later group.
  RendezvousOptions o{"127.0.0.1", 0, 4};
  o.min_world = 2;
  o.settle_s = 1.5;
  o.divisor = 4;
  RendezvousServer srv(o);
  std::vector<GroupInfo> got(4);
  std::vector<std::string> err(4);
  std::vector<std::thread> ts;
  for (int order : {0, 2, 3})
    ts.emplace_back([&, order] {
      try {
        got[order] = RendezvousClient(addr(srv)).join(order, fp("c"), milliseconds(order == 3 ? 4000 : 30000));
      } catch (const Error& e) {
        err[order] = e.what();
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(err[0], "");
  EXPECT_EQ(err[2], "");
  EXPECT_EQ((std::vector<int>{got[0].rank, got[0].world, got[2].rank, got[2].world}),
            (std::vector<int>{0, 2, 1, 2}));
  EXPECT_NE(err[3].find("did not form"), std::string::npos) << err[3];
}

TEST(Rendezvous, RanksThatComeBackWithoutRankZeroWaitForIt) {
  // A machine lost and back while rank 0's group runs: its ranks alone never form a group
  // (that would be a second run), and the running group of 2 learns it can grow to 4.
  RendezvousOptions o{"127.0.0.1", 0, 4};
  o.min_world = 2;
  o.settle_s = 0.3;
  o.divisor = 4;
  RendezvousServer srv(o);
  RendezvousClient watcher(addr(srv));
  EXPECT_FALSE(watcher.group_can_grow(2));
  std::vector<std::string> err(4);
  std::vector<std::thread> ts;
  for (int order : {2, 3})
    ts.emplace_back([&, order] {
      try {
        RendezvousClient(addr(srv)).join(order, fp("c"), milliseconds(2500));
      } catch (const Error& e) {
        err[order] = e.what();
      }
    });
  bool grow = false;
  for (int i = 0; i < 2000 && !grow; ++i) {  // until both wait (no deadline races: ~2 s max)
    grow = watcher.group_can_grow(2);
    if (!grow) std::this_thread::sleep_for(milliseconds(1));
  }
  EXPECT_TRUE(grow);
  EXPECT_FALSE(watcher.group_can_grow(4));  // nothing larger than the full group
  for (auto& t : ts) t.join();
  for (int order : {2, 3}) EXPECT_NE(err[order].find("did not form"), std::string::npos) << err[order];
}
