// The interpreter's cooperative_groups (kernels/interpreter/): the subset the kernels use. Found before
// CUDA's own header only when kernels are built for the interpreter.
#pragma once

#include <source_location>

#include "kernels/interpreter/simt.h"

namespace cooperative_groups {

class grid_group {
 public:
  // Every thread of a cooperative launch waits here for all others; outside one it is an error.
  void sync(std::source_location loc = std::source_location::current()) const {
    ::gan::interp::grid_sync(loc);
  }
  unsigned long long num_threads() const {
    const auto& t = ::gan::interp::self();
    return 1ull * t.grid_dim.x * t.grid_dim.y * t.grid_dim.z * t.block_dim.x * t.block_dim.y *
           t.block_dim.z;
  }
  unsigned long long size() const { return num_threads(); }
};

class thread_block {
 public:
  void sync(std::source_location loc = std::source_location::current()) const {
    ::gan::interp::block_sync(loc);
  }
};

inline grid_group this_grid() { return {}; }
inline thread_block this_thread_block() { return {}; }

}  // namespace cooperative_groups
