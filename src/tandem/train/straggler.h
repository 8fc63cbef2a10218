// Straggler detection for data-parallel runs: every rank waits for the slowest at each step's
// sum, so one slow device slows the whole group. A rank whose compute time per step stays
// above `factor` times the median of the other ranks' (the median of its ratio over the last
// `window` steps) is reported once, and again when it has recovered.
#pragma once

#include <cstddef>
#include <deque>
#include <vector>

namespace tandem {

class StragglerWatch {
 public:
  StragglerWatch(double factor, int window) : factor_(factor), window_(window) {}

  struct Change {
    int rank = 0;
    bool slow = false;     // true: became a straggler; false: recovered
    double ratio = 0;      // the median ratio over the window
    double rank_s = 0;     // its median compute seconds per step over the window
    double others_s = 0;   // the other ranks' median over the window
  };
  // One step's compute seconds by rank; the changes it causes. A different number of ranks
  // starts the watch afresh.
  std::vector<Change> observe(const std::vector<double>& rank_seconds);
  bool slow(int rank) const { return rank < (int)slow_.size() && slow_[(size_t)rank]; }

 private:
  double factor_;
  int window_;
  std::vector<std::deque<double>> ratio_, secs_, others_;  // by rank
  std::vector<bool> slow_;
};

}  // namespace tandem
