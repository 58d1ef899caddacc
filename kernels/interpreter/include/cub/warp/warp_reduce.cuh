// The interpreter's cub::WarpReduce (kernels/interpreter/): the subset the kernels use, as a
// reference implementation over the interpreter's warp shuffles. Found before CUDA's CUB only when
// kernels are built for the interpreter; the GPU build uses NVIDIA's.
//
// Semantics and order are CUB's (WarpReduceShfl): logical warps of LOGICAL_WARP_THREADS lanes
// (a power of 2, at most 32); every lane of the logical warp calls; shuffle-down steps with
// offsets 1, 2, 4, ... (a fixed tree), a lane adding its partner's value only when the partner is
// one of the first `valid_items` lanes; the result is defined in lane 0 of the logical warp only.
// TempStorage is empty, as with CUB's shuffle-based specialisation.
#pragma once

#include <source_location>

#include "kernels/interpreter/simt.h"

namespace cub {

template <typename T, int LOGICAL_WARP_THREADS = 32, int LEGACY_PTX_ARCH = 0>
class WarpReduce {
  static_assert(LOGICAL_WARP_THREADS >= 1 && LOGICAL_WARP_THREADS <= 32 &&
                    (LOGICAL_WARP_THREADS & (LOGICAL_WARP_THREADS - 1)) == 0,
                "cub::WarpReduce: LOGICAL_WARP_THREADS must be a power of two, at most 32");

 public:
  struct TempStorage {};

  WarpReduce(TempStorage& /*storage*/) {}

  T Sum(T input) { return Reduce(input, Plus{}, LOGICAL_WARP_THREADS); }
  T Sum(T input, int valid_items) { return Reduce(input, Plus{}, valid_items); }
  template <typename ReductionOp>
  T Reduce(T input, ReductionOp op) {
    return Reduce(input, op, LOGICAL_WARP_THREADS);
  }
  // Lanes at or past valid_items still take part in the shuffles; their inputs are ignored.
  template <typename ReductionOp>
  T Reduce(T input, ReductionOp op, int valid_items) {
    const int linear = linear_tid();
    const int lane = linear % LOGICAL_WARP_THREADS;
    const int last_lane = valid_items - 1;
    const unsigned mask = member_mask(linear);
    T output = input;
    for (int offset = 1; offset < LOGICAL_WARP_THREADS; offset <<= 1) {
      const T other = __shfl_down_sync(mask, output, unsigned(offset), LOGICAL_WARP_THREADS);
      if (lane + offset <= last_lane) output = op(output, other);
    }
    return output;
  }

 private:
  struct Plus {
    T operator()(const T& a, const T& b) const { return a + b; }
  };
  static int linear_tid() {
    const auto& t = ::gan::interp::self();
    return int(t.thread_idx.x + t.block_dim.x * (t.thread_idx.y + t.block_dim.y * t.thread_idx.z));
  }
  // The lanes of the caller's logical warp (CUB's WarpMask).
  static unsigned member_mask(int linear) {
    const int lane = linear & 31;
    const unsigned group =
        LOGICAL_WARP_THREADS == 32 ? 0xffffffffu : (1u << LOGICAL_WARP_THREADS) - 1u;
    return group << (lane / LOGICAL_WARP_THREADS * LOGICAL_WARP_THREADS);
  }
};

}  // namespace cub
