// The interpreter's cub::BlockReduce (kernels/interpreter/): the subset the kernels use, as a
// reference implementation over the interpreter's barriers and warp shuffles. Found before CUDA's
// CUB only when kernels are built for the interpreter; the GPU build uses NVIDIA's.
//
// Semantics and order are CUB's BLOCK_REDUCE_WARP_REDUCTIONS (RAKING, which the interpreter
// computes the same way, is accepted too): every warp reduces its lanes with WarpReduce (lane 0
// holds the warp's aggregate), lane 0 of each warp writes it to TempStorage, one
// __syncthreads(), then thread 0 combines the aggregates of warps 0, 1, 2, ... in order. The
// result is defined in thread 0 only. There is no barrier after the reduction: reusing the same
// TempStorage needs a __syncthreads() first, as with CUB (the interpreter's schedules expose a
// missing one). TempStorage is a plain struct, so `__shared__ typename BlockReduce::TempStorage`
// is a thread-local static like any other shared variable, filled with NaN bytes before every
// block. Threads are linearised x-major; the block size must be a multiple of 32.
#pragma once

#include "cub/warp/warp_reduce.cuh"
#include "kernels/interpreter/simt.h"

namespace cub {

enum BlockReduceAlgorithm {
  BLOCK_REDUCE_RAKING_COMMUTATIVE_ONLY,
  BLOCK_REDUCE_RAKING,
  BLOCK_REDUCE_WARP_REDUCTIONS,
};

template <typename T, int BLOCK_DIM_X,
          BlockReduceAlgorithm ALGORITHM = BLOCK_REDUCE_WARP_REDUCTIONS, int BLOCK_DIM_Y = 1,
          int BLOCK_DIM_Z = 1, int LEGACY_PTX_ARCH = 0>
class BlockReduce {
  static constexpr int kThreads = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;
  static constexpr int kWarps = kThreads / 32;
  static_assert(kThreads > 0 && kThreads <= 1024 && kThreads % 32 == 0,
                "cub::BlockReduce (interpreter): the block size must be a multiple of 32, at most "
                "1024");
  static_assert(ALGORITHM == BLOCK_REDUCE_WARP_REDUCTIONS || ALGORITHM == BLOCK_REDUCE_RAKING,
                "cub::BlockReduce (interpreter): BLOCK_REDUCE_WARP_REDUCTIONS or RAKING only");
  using Warp = WarpReduce<T, 32>;

 public:
  struct TempStorage {
    T warp_aggregates[kWarps];
  };

  BlockReduce(TempStorage& storage) : storage_(storage) {}

  T Sum(T input) { return Reduce(input, Plus{}, kThreads); }
  T Sum(T input, int num_valid) { return Reduce(input, Plus{}, num_valid); }
  template <typename ReductionOp>
  T Reduce(T input, ReductionOp op) {
    return Reduce(input, op, kThreads);
  }
  // Threads at or past num_valid take part (every thread must call); their inputs are ignored.
  template <typename ReductionOp>
  T Reduce(T input, ReductionOp op, int num_valid) {
    const auto& t = ::gan::interp::self();
    const int linear =
        int(t.thread_idx.x + t.block_dim.x * (t.thread_idx.y + t.block_dim.y * t.thread_idx.z));
    const int warp = linear / 32, lane = linear % 32;
    const int warp_offset = warp * 32;
    const int warp_valid = warp_offset + 32 <= num_valid ? 32 : num_valid - warp_offset;
    typename Warp::TempStorage none;
    T aggregate = Warp(none).Reduce(input, op, warp_valid);
    if (lane == 0) storage_.warp_aggregates[warp] = aggregate;
    __syncthreads();
    if (linear == 0)
      for (int w = 1; w < kWarps; ++w)
        if (w * 32 < num_valid) aggregate = op(aggregate, storage_.warp_aggregates[w]);
    return aggregate;
  }

 private:
  struct Plus {
    T operator()(const T& a, const T& b) const { return a + b; }
  };
  TempStorage& storage_;
};

}  // namespace cub
