// Block-wide sum or max for row kernels (one block per row; blockDim.x a multiple of 32, at most
// 1024). Every thread gets the result. red: 32 floats of shared memory, reusable right after.
#pragma once

#include "kernels/runtime.h"

namespace gan::kernels {

template <bool Max>
__device__ __forceinline__ float block_reduce(float v, float* red) {
  for (int off = 16; off > 0; off >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = Max ? fmaxf(v, o) : v + o;
  }
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < int(blockDim.x) / 32; ++w) r = Max ? fmaxf(r, red[w]) : r + red[w];
  __syncthreads();  // red is reused by the next reduction
  return r;
}

}  // namespace gan::kernels
