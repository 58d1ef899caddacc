// Block-wide sum or max for row kernels (one block per row; 1-D blocks of Threads threads, a
// multiple of 32, at most 1024): cub::BlockReduce (BLOCK_REDUCE_WARP_REDUCTIONS: a fixed order
// for a fixed block size, so results are bitwise repeatable), its result broadcast to every
// thread through shared memory. The storage is reusable right after the call.
#pragma once

#include <cub/block/block_reduce.cuh>

#include "kernels/runtime.h"

namespace gan::kernels {

// Max of two floats as CUDA's fmaxf (a NaN operand yields the other one).
struct FMaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <int Threads>
using BlockReduceF = cub::BlockReduce<float, Threads, cub::BLOCK_REDUCE_WARP_REDUCTIONS>;

// Declare as `__shared__ BlockReduceStorage<Threads> red;`.
template <int Threads>
struct BlockReduceStorage {
  typename BlockReduceF<Threads>::TempStorage cub;
  float result;
};

template <bool Max, int Threads>
__device__ __forceinline__ float block_reduce(float v, BlockReduceStorage<Threads>& red) {
  float r;
  if constexpr (Max)
    r = BlockReduceF<Threads>(red.cub).Reduce(v, FMaxOp{});
  else
    r = BlockReduceF<Threads>(red.cub).Sum(v);
  if (threadIdx.x == 0) red.result = r;  // CUB defines the result in thread 0 only
  __syncthreads();
  r = red.result;
  __syncthreads();  // red is reused by the next reduction
  return r;
}

}  // namespace gan::kernels
