// The NCCL communicator on real GPUs: every collective of one rank (values read back from the
// device), abort, re-forming, a tiny deadline; and two ranks as threads where two GPUs exist.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "tandem/dist/nccl/nccl_communicator.h"
#include "tandem/dist/store.h"

using namespace tandem;
using std::chrono::milliseconds;

namespace {

int gpu_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear it: the next test asks again
    return 0;
  }
  return n;
}

#define REQUIRE_GPUS(k)  \
  if (gpu_count() < (k)) \
  GTEST_SKIP() << "needs " << (k) << " CUDA device(s), the driver reports " << gpu_count()

// n elements of T on the current device, moved to and from the host with cudaMemcpy.
template <typename T>
class DeviceVec {
 public:
  explicit DeviceVec(size_t n) : n_(n) {
    EXPECT_EQ(cudaMalloc(&p_, n_ ? n_ * sizeof(T) : 1), cudaSuccess);
    // Not a value any test expects, so a collective that wrote nothing is seen.
    EXPECT_EQ(cudaMemset(p_, 0x7f, n_ * sizeof(T)), cudaSuccess);
  }
  explicit DeviceVec(const std::vector<T>& v) : DeviceVec(v.size()) {
    EXPECT_EQ(cudaMemcpy(p_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceVec() { cudaFree(p_); }
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;

  T* get() { return static_cast<T*>(p_); }
  std::vector<T> host() const {
    std::vector<T> v(n_, T(-7));
    EXPECT_EQ(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }

 private:
  size_t n_;
  void* p_ = nullptr;
};

// Values whose every bit matters: fractions for floats, beyond 2^53 for int64 (a path through
// double would round them).
template <typename T>
std::vector<T> pattern(size_t n, int rank) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, int64_t>)
      v[i] = (int64_t(1) << 60) + int64_t(i) * 3 - 1000 + rank;
    else
      v[i] = T(0.25) * T(i % 97) - T(11.5) + T(rank);
  }
  return v;
}

std::unique_ptr<Communicator> one_rank(KvStore& store, const std::string& prefix) {
  return make_nccl_communicator(store, prefix, 0, 1, 0, milliseconds(30000));
}

void expect_comm_error(const std::function<void()>& f, CommError::Kind kind) {
  try {
    f();
    ADD_FAILURE() << "no CommError";
  } catch (const CommError& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("[nccl] ", 0), 0u) << e.what();
  }
}

template <typename T>
void check_all_reduce(Communicator& c, CommType t) {
  const std::vector<T> in = pattern<T>(1000, 0);
  for (CommOp op : {CommOp::kSum, CommOp::kMax}) {
    DeviceVec<T> d(in);
    c.all_reduce(d.get(), in.size(), t, op);
    EXPECT_EQ(d.host(), in);
  }
}

}  // namespace

TEST(Nccl, RejectsBadArgumentsBeforeTouchingTheDevice) {
  auto store = make_memory_store();
  EXPECT_THROW(make_nccl_communicator(*store, "x/", 2, 2, 0, milliseconds(1000)), Error);
  EXPECT_THROW(make_nccl_communicator(*store, "x/", 0, 0, 0, milliseconds(1000)), Error);
  EXPECT_THROW(make_nccl_communicator(*store, "x/", 0, 1, -1, milliseconds(1000)), Error);
  EXPECT_THROW(make_nccl_communicator(*store, "x/", 0, 1, 0, milliseconds(0)), Error);
}

TEST(Nccl, OneRankNamesItsEngine) {
  REQUIRE_GPUS(1);
  auto store = make_memory_store();
  auto c = one_rank(*store, "t/");
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_FALSE(c->aborted());
  EXPECT_EQ(c->engine().rfind("nccl 2.", 0), 0u) << c->engine();
  EXPECT_NE(c->engine().find("(device 0)"), std::string::npos) << c->engine();
}

TEST(Nccl, AllReduceSumAndMaxOfEveryType) {
  REQUIRE_GPUS(1);
  auto store = make_memory_store();
  auto c = one_rank(*store, "t/");
  check_all_reduce<float>(*c, CommType::kF32);
  check_all_reduce<double>(*c, CommType::kF64);
  check_all_reduce<int64_t>(*c, CommType::kI64);
  c->all_reduce(nullptr, 0, CommType::kF32, CommOp::kSum);  // nothing to move is not an error
}

TEST(Nccl, AllGatherBroadcastReduceScatterBarrier) {
  REQUIRE_GPUS(1);
  auto store = make_memory_store();
  auto c = one_rank(*store, "t/");
  const std::vector<float> f = pattern<float>(777, 0);
  const std::vector<int64_t> i = pattern<int64_t>(333, 0);
  {
    DeviceVec<float> in(f), out(f.size());
    c->all_gather(in.get(), out.get(), f.size(), CommType::kF32);
    EXPECT_EQ(out.host(), f);
  }
  {
    DeviceVec<int64_t> in(i), out(i.size());
    c->all_gather(in.get(), out.get(), i.size(), CommType::kI64);
    EXPECT_EQ(out.host(), i);
  }
  {
    DeviceVec<double> buf(pattern<double>(100, 0));
    c->broadcast(buf.get(), 100, CommType::kF64, 0);
    EXPECT_EQ(buf.host(), pattern<double>(100, 0));
    EXPECT_THROW(c->broadcast(buf.get(), 100, CommType::kF64, 1), Error);
  }
  {
    DeviceVec<float> in(f), out(f.size());
    c->reduce_scatter(in.get(), out.get(), {f.size()}, CommType::kF32, CommOp::kSum);
    EXPECT_EQ(out.host(), f);
    EXPECT_THROW(c->reduce_scatter(in.get(), out.get(), {1, 1}, CommType::kF32, CommOp::kSum),
                 Error);
  }
  {
    DeviceVec<int64_t> in(i), out(i.size());
    c->reduce_scatter(in.get(), out.get(), {i.size()}, CommType::kI64, CommOp::kMax);
    EXPECT_EQ(out.host(), i);
  }
  for (int k = 0; k < 3; ++k) c->barrier();
  EXPECT_FALSE(c->aborted());  // the argument errors above did not cost the communicator
}

TEST(Nccl, AbortThenEveryCallThrowsAborted) {
  REQUIRE_GPUS(1);
  auto store = make_memory_store();
  auto c = one_rank(*store, "t/");
  DeviceVec<float> a(16), b(16);
  c->barrier();
  c->abort();
  c->abort();  // idempotent
  EXPECT_TRUE(c->aborted());
  const auto kAborted = CommError::Kind::kAborted;
  expect_comm_error([&] { c->all_reduce(a.get(), 16, CommType::kF32, CommOp::kSum); }, kAborted);
  expect_comm_error(
      [&] { c->reduce_scatter(a.get(), b.get(), {16}, CommType::kF32, CommOp::kSum); }, kAborted);
  expect_comm_error([&] { c->all_gather(a.get(), b.get(), 16, CommType::kF32); }, kAborted);
  expect_comm_error([&] { c->broadcast(a.get(), 16, CommType::kF32, 0); }, kAborted);
  expect_comm_error([&] { c->barrier(); }, kAborted);
}

TEST(Nccl, AbortFromAnotherThreadEndsACallerPromptly) {
  REQUIRE_GPUS(1);
  auto store = make_memory_store();
  auto c = one_rank(*store, "t/");
  DeviceVec<float> buf(1 << 20);
  std::thread aborter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    c->abort();
  });
  const auto start = std::chrono::steady_clock::now();
  bool threw = false;
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    try {
      c->all_reduce(buf.get(), 1 << 20, CommType::kF32, CommOp::kSum);
    } catch (const CommError& e) {
      EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(CommError::Kind::kAborted))
          << e.what();
      threw = true;
      break;
    }
  }
  aborter.join();
  EXPECT_TRUE(threw) << "calls kept succeeding for 10 s after abort()";
}

TEST(Nccl, ReinitAfterAbortWorks) {
  REQUIRE_GPUS(1);
  auto store = make_memory_store();
  auto first = one_rank(*store, "g0/");
  first->barrier();
  first->abort();
  // The aborted one is still alive while its successor forms and works.
  auto second = one_rank(*store, "g1/");
  const std::vector<double> v = pattern<double>(500, 0);
  DeviceVec<double> d(v);
  second->all_reduce(d.get(), v.size(), CommType::kF64, CommOp::kSum);
  EXPECT_EQ(d.host(), v);
  second->barrier();
  first.reset();
  second->barrier();
  EXPECT_FALSE(second->aborted());
}

TEST(Nccl, OneMillisecondDeadlineCompletesOrTimesOut) {
  REQUIRE_GPUS(1);
  auto store = make_memory_store();
  auto c = one_rank(*store, "t/");
  const size_t n = size_t(1) << 24;  // 64 MiB of floats
  DeviceVec<float> buf(n);
  c->set_timeout(milliseconds(1));
  for (int k = 0; k < 20; ++k) {
    try {
      c->all_reduce(buf.get(), n, CommType::kF32, CommOp::kSum);
    } catch (const CommError& e) {
      EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(CommError::Kind::kTimeout))
          << e.what();
      EXPECT_TRUE(c->aborted());
      expect_comm_error([&] { c->barrier(); }, CommError::Kind::kAborted);
      return;
    }
  }
}

namespace {

// Runs fn(comm) on `world` ranks, one thread and one GPU each, through one memory store.
void on_ranks(int world, const std::function<void(Communicator&)>& fn) {
  auto store = make_memory_store();
  std::vector<std::thread> ts;
  std::vector<std::string> errors(world);
  for (int r = 0; r < world; ++r)
    ts.emplace_back([&, r] {
      try {
        if (cudaSetDevice(r) != cudaSuccess) throw Error("cudaSetDevice failed");
        auto c = make_nccl_communicator(*store, "t/", r, world, r, milliseconds(60000));
        fn(*c);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : ts) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

}  // namespace

TEST(Nccl, TwoRanksAsThreads) {
  REQUIRE_GPUS(2);
  on_ranks(2, [](Communicator& c) {
    const int r = c.rank();
    const size_t n = 1000;
    const auto a = pattern<float>(n, 0), b = pattern<float>(n, 1);  // ranks 0 and 1
    std::vector<float> sum(n), mine = r == 0 ? a : b;
    for (size_t i = 0; i < n; ++i) sum[i] = a[i] + b[i];
    {
      DeviceVec<float> d(mine);
      c.all_reduce(d.get(), n, CommType::kF32, CommOp::kSum);
      if (d.host() != sum) throw Error("all_reduce sum differs on rank " + std::to_string(r));
    }
    {
      DeviceVec<int64_t> d(pattern<int64_t>(n, r));
      c.all_reduce(d.get(), n, CommType::kI64, CommOp::kMax);
      if (d.host() != pattern<int64_t>(n, 1)) throw Error("all_reduce max differs");
    }
    {
      DeviceVec<float> in(mine), out(2 * n);
      c.all_gather(in.get(), out.get(), n, CommType::kF32);
      std::vector<float> want = a;
      want.insert(want.end(), b.begin(), b.end());
      if (out.host() != want) throw Error("all_gather differs");
    }
    {
      DeviceVec<float> d(mine);
      c.broadcast(d.get(), n, CommType::kF32, 1);
      if (d.host() != b) throw Error("broadcast differs");
    }
    // Even blocks take ncclReduceScatter; uneven ones the grouped reduces.
    for (const std::vector<size_t>& counts :
         {std::vector<size_t>{500, 500}, std::vector<size_t>{300, 700},
          std::vector<size_t>{0, 1000}}) {
      DeviceVec<float> in(mine), out(counts[r]);
      c.reduce_scatter(in.get(), out.get(), counts, CommType::kF32, CommOp::kSum);
      const size_t off = r == 0 ? 0 : counts[0];
      const std::vector<float> want(sum.begin() + off, sum.begin() + off + counts[r]);
      if (out.host() != want)
        throw Error("reduce_scatter differs for counts " + std::to_string(counts[0]) + "," +
                    std::to_string(counts[1]));
    }
    c.barrier();
  });
}

TEST(Nccl, TwoRanksAMissingPeerIsATimeout) {
  REQUIRE_GPUS(2);
  std::atomic<bool> rank0_done{false};
  on_ranks(2, [&](Communicator& c) {
    c.set_timeout(milliseconds(2000));
    c.barrier();  // both are up
    // Rank 1 never joins the all-reduce, but stays up until rank 0 has given up on it.
    if (c.rank() == 1) {
      const auto cap = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!rank0_done.load() && std::chrono::steady_clock::now() < cap)
        std::this_thread::sleep_for(milliseconds(5));
      return;
    }
    DeviceVec<float> d(1000);
    c.set_timeout(milliseconds(500));
    const auto start = std::chrono::steady_clock::now();
    expect_comm_error([&] { c.all_reduce(d.get(), 1000, CommType::kF32, CommOp::kSum); },
                      CommError::Kind::kTimeout);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
    rank0_done.store(true);
  });
}
