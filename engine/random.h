// Seeded counter-based random fills (Philox4x32-10, kernels/random.h). The same seed gives the same
// numbers on the CPU and the GPU. A CUDA generator keeps (seed, offset) in device memory so fills
// inside a captured CUDA graph draw fresh numbers on every replay.
#pragma once

#include <cstdint>
#include <memory>

#include "engine/tensor.h"

namespace gan {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, Device device = Device::CPU);

  void normal_(Tensor& t, double mean = 0.0, double stddev = 1.0);
  void uniform_(Tensor& t, double lo = 0.0, double hi = 1.0);

  Device device() const { return device_; }
  // State (seed, offset); reading or writing a CUDA generator's state synchronises.
  uint64_t seed() const;
  uint64_t offset() const;
  void set_state(uint64_t seed, uint64_t offset);

 private:
  void fill(Tensor& t, int dist, double a, double b);
  Device device_;
  std::shared_ptr<Storage> state_;  // uint64[2] = {seed, offset} on device_
};

}  // namespace gan
