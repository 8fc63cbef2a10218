// The exact gradient sum: the bits of a step never depend on how many ranks computed it.
// Each shard's gradient is turned into 64-bit fixed point, one power-of-two scale per tensor;
// integers add associatively, so the engine may sum them in any order and any grouping and
// every world size gets the same total. The scale of a step comes from the previous step's
// largest gradient (state that travels with checkpoints); a step whose gradients left the
// window the scale covers (overflow, or fewer than kMinBits of precision for its largest
// value) is recomputed with a scale from its own largest gradient: a rare, deterministic
// retry (step 1, sudden swings).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tandem {

class ExactGradSum {
 public:
  static constexpr int kHeadroomBits = 8;  // growth of the largest gradient a scale absorbs
  static constexpr int kMinBits = 32;      // precision kept for a tensor's largest value

  // segments: (offset, count) of each tensor in the gradient buffer; shards: how many shards
  // make the step's total (the global batch's micro-batches, not this rank's).
  ExactGradSum(std::vector<std::pair<size_t, size_t>> segments, int shards);

  // The exponents (one per segment): values are scaled by 2^exponent before rounding.
  const std::vector<int>& exponents() const { return exp_; }
  void set_exponents(const std::vector<int>& e);

  void begin();                                 // zeroes this rank's accumulator
  void add(const float* g);                     // one shard, every segment
  void add_segments(const float* g, size_t first, size_t last);  // segments [first, last)
  int64_t* accumulator() { return acc_.data(); }  // to be summed over ranks (kI64, kSum)
  size_t size() const { return acc_.size(); }
  // Largest |value| per segment over this rank's shards (+inf when one was not finite); the
  // step's maxima are the element-wise max over ranks.
  const std::vector<double>& local_max() const { return max_; }

  // With the step's maxima over all ranks: true if every segment was inside its window. If
  // not, the exponents are replaced by ones fitted to `global_max` and the step must be
  // recomputed. Non-finite segments are never retried (the guard sees them in finish()).
  bool accept(const std::vector<double>& global_max);
  // The summed gradient back to float (a segment with a non-finite value gets NaN, so the
  // guard rejects the step), and the exponents fitted for the next step.
  void finish(float* g, const std::vector<double>& global_max);

  // The exponent that places `max` kHeadroomBits below the overflow bound.
  int fitted_exponent(double max) const;

 private:
  std::vector<std::pair<size_t, size_t>> seg_;
  std::vector<int> exp_;
  std::vector<double> max_;
  std::vector<int64_t> acc_;
  int shard_bits_ = 0;  // ceil(log2(shards))
};

}  // namespace tandem
