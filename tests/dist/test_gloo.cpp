// The Gloo communicator with ranks as threads over loopback: each collective against the
// values computed here, and the three ways a call ends early (abort, a lost peer, a deadline).
#include <gtest/gtest.h>

#include <functional>
#include <thread>
#include <vector>

#include "tandem/dist/gloo/gloo_communicator.h"
#include "tandem/dist/store.h"

using namespace tandem;
using std::chrono::milliseconds;

namespace {

// Runs fn(comm) on `world` ranks, one thread each, connected through one memory store.
void on_ranks(int world, const std::function<void(Communicator&)>& fn,
              milliseconds timeout = milliseconds(20000)) {
  auto store = make_memory_store();
  std::vector<std::thread> ts;
  std::vector<std::string> errors(world);
  for (int r = 0; r < world; ++r)
    ts.emplace_back([&, r] {
      try {
        auto c = make_gloo_communicator(store, "t/", r, world, "127.0.0.1", timeout);
        fn(*c);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : ts) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

// Two connected ranks with a minute's deadline, for the tests of calls that end early.
std::pair<std::unique_ptr<Communicator>, std::unique_ptr<Communicator>> connected_pair() {
  auto store = make_memory_store();
  std::unique_ptr<Communicator> c0, c1;
  std::thread t1([&] { c1 = make_gloo_communicator(store, "p/", 1, 2, "127.0.0.1", milliseconds(60000)); });
  c0 = make_gloo_communicator(store, "p/", 0, 2, "127.0.0.1", milliseconds(60000));
  t1.join();
  return {std::move(c0), std::move(c1)};
}

}  // namespace

TEST(Gloo, AllReduceSumAndMaxOfEveryType) {
  for (int world : {1, 2, 3, 4})
    on_ranks(world, [world](Communicator& c) {
      const int r = c.rank();
      EXPECT_EQ(c.size(), world);
      std::vector<int64_t> i = {r + 1, -3 * r, (int64_t)1 << 50};
      c.all_reduce(i.data(), i.size(), CommType::kI64, CommOp::kSum);
      const int64_t tri = (int64_t)world * (world + 1) / 2;
      EXPECT_EQ(i, (std::vector<int64_t>{tri, -3 * (tri - world), (int64_t)world << 50}));
      std::vector<double> d = {0.5 * r, -(double)r};
      c.all_reduce(d.data(), d.size(), CommType::kF64, CommOp::kMax);
      EXPECT_EQ(d, (std::vector<double>{0.5 * (world - 1), 0.0}));
      std::vector<float> f(1000, 1.0f + r);  // longer than one segment of small messages
      c.all_reduce(f.data(), f.size(), CommType::kF32, CommOp::kSum);
      for (float x : f) ASSERT_EQ(x, (float)(tri));
    });
}

TEST(Gloo, AllGatherBroadcastReduceScatterBarrier) {
  for (int world : {1, 3, 4})
    on_ranks(world, [world](Communicator& c) {
      const int r = c.rank();
      std::vector<int64_t> in = {10 * r, 10 * r + 1}, out(2 * world, -1);
      c.all_gather(in.data(), out.data(), 2, CommType::kI64);
      for (int k = 0; k < world; ++k) {
        EXPECT_EQ(out[2 * k], 10 * k);
        EXPECT_EQ(out[2 * k + 1], 10 * k + 1);
      }
      std::vector<double> b = {r == world - 1 ? 3.25 : -1.0, (double)r};
      c.broadcast(b.data(), 2, CommType::kF64, world - 1);
      EXPECT_EQ(b, (std::vector<double>{3.25, (double)(world - 1)}));
      // Blocks of 1, 2, 3 ... elements; element j of the input is j on every rank.
      std::vector<size_t> counts;
      size_t total = 0;
      for (int k = 0; k < world; ++k) counts.push_back(k + 1), total += k + 1;
      std::vector<int64_t> src(total);
      for (size_t j = 0; j < total; ++j) src[j] = (int64_t)j;
      std::vector<int64_t> mine(counts[r]);
      c.reduce_scatter(src.data(), mine.data(), counts, CommType::kI64, CommOp::kSum);
      const size_t off = (size_t)r * (r + 1) / 2;
      for (size_t j = 0; j < mine.size(); ++j) EXPECT_EQ(mine[j], (int64_t)(off + j) * world);
      c.barrier();
    });
}

TEST(Gloo, AnAbortedCommunicatorRefusesEveryCall) {
  auto [c0, c1] = connected_pair();
  CommError::Kind kind = CommError::Kind::kTimeout;
  std::vector<int64_t> v(4, 1);
  bool threw = false;
  c0->abort();
  try {
    c0->all_reduce(v.data(), v.size(), CommType::kI64, CommOp::kSum);
  } catch (const CommError& e) {
    threw = true;
    kind = e.kind();
  }
  EXPECT_TRUE(threw);
  EXPECT_EQ(kind, CommError::Kind::kAborted);
  EXPECT_TRUE(c0->aborted());
}

TEST(Gloo, AbortFromAnotherThreadEndsACallInFlight) {
  auto [c0, c1] = connected_pair();
  // Rank 1 never calls; rank 0's all-reduce blocks until the abort, which may land before or
  // during it: both must end it.
  std::thread aborter([&] { c0->abort(); });
  std::vector<int64_t> v(1 << 16, 1);
  CommError::Kind kind = CommError::Kind::kTimeout;
  bool threw = false;
  try {
    c0->all_reduce(v.data(), v.size(), CommType::kI64, CommOp::kSum);
  } catch (const CommError& e) {
    threw = true;
    kind = e.kind();
  }
  aborter.join();
  EXPECT_TRUE(threw);
  EXPECT_EQ(kind, CommError::Kind::kAborted);
}

TEST(Gloo, ALostPeerIsReportedNotWaitedFor) {
  auto [c0, c1] = connected_pair();
  c1.reset();  // rank 1 goes away: its sockets close
  std::vector<int64_t> v(1 << 16, 1);
  try {
    c0->all_reduce(v.data(), v.size(), CommType::kI64, CommOp::kSum);
    FAIL() << "an all-reduce with a vanished peer completed";
  } catch (const CommError& e) {
    EXPECT_EQ(e.kind(), CommError::Kind::kPeerLost) << e.what();
  }
}

TEST(Gloo, ADeadlineEndsACallOnASilentPeer) {
  auto [c0, c1] = connected_pair();
  c0->set_timeout(milliseconds(200));  // rank 1 is alive but never calls
  std::vector<int64_t> v(8, 1);
  try {
    c0->all_reduce(v.data(), v.size(), CommType::kI64, CommOp::kSum);
    FAIL() << "an all-reduce without its peer completed";
  } catch (const CommError& e) {
    EXPECT_EQ(e.kind(), CommError::Kind::kTimeout) << e.what();
  }
}
