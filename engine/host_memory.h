// Host memory of CPU tensors (engine/tensor.cpp keeps blocks of 64 KiB and more in free lists by
// size class when they are freed, to hand them out again). For memory reports (gan_bench): bytes
// in live tensors, counted as their size classes (what they occupy), bytes parked in the free
// lists, and the high-water marks of the first and of their sum since the process began. The
// resident set can only be below the sum's mark by pages never touched.
#pragma once

#include <cstddef>

namespace gan::host_memory {

struct Stats {
  size_t live = 0;        // bytes of live CPU tensors (size classes)
  size_t cached = 0;      // bytes in the free lists
  size_t peak_live = 0;   // high-water mark of live
  size_t peak_total = 0;  // high-water mark of live + cached
};

Stats stats();

}  // namespace gan::host_memory
