// Carving one allocation into many tensors without hand-summed sizes: run the same sequence
// of take() calls twice, first to measure (no base), then to hand out pointers.
#pragma once

#include <cstddef>

namespace tandem {

class Carver {
 public:
  Carver() = default;
  explicit Carver(float* base) : base_(base) {}
  // n floats, rounded up so every tensor starts 64-byte aligned. Null while measuring.
  float* take(size_t n) {
    float* p = base_ ? base_ + used_ : nullptr;
    used_ += (n + 15) / 16 * 16;
    return p;
  }
  size_t used() const { return used_; }  // floats

 private:
  float* base_ = nullptr;
  size_t used_ = 0;
};

}  // namespace tandem
