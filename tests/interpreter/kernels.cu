#include "tests/interpreter/kernels.h"

#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include "kernels/mma.h"
#include "kernels/runtime.h"

namespace gan::interp_test {

namespace {

using kernels::launch;

__global__ void warp_and_block_ops_kernel(const float* in, float* out) {
  __shared__ float tree[64];
  const int t = int(threadIdx.x), lane = t % 32;
  const float v = in[t];
  float down = v, x = v, up = v;
  for (int off = 16; off > 0; off >>= 1) down += __shfl_down_sync(0xffffffffu, down, off);
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  for (int off = 1; off < 32; off <<= 1) {
    const float o = __shfl_up_sync(0xffffffffu, up, unsigned(off));
    if (lane >= off) up += o;
  }
  const float first = __shfl_sync(0xffffffffu, v, 0);
  const unsigned ballot = __ballot_sync(0xffffffffu, v > 0.f);
  const int any = __any_sync(0xffffffffu, v > 100.f), all = __all_sync(0xffffffffu, v > -100.f);
  tree[t] = v;
  __syncthreads();
  for (int s = 32; s > 0; s >>= 1) {
    if (t < s) tree[t] += tree[t + s];
    __syncthreads();
  }
  // out: [0, 64) per-thread prefix sums; then per warp: down-sum, xor-sum, first, ballot
  // count, any, all; then the block sum.
  out[t] = up;
  if (lane == 0) {
    float* w = out + 64 + 6 * (t / 32);
    w[0] = down;
    w[1] = x;
    w[2] = first;
    w[3] = float(__popc(ballot));
    w[4] = float(any);
    w[5] = float(all);
  }
  if (t == 0) out[76] = tree[0];
}

__global__ void missing_barrier_kernel(const float* in, float* out, int n) {
  __shared__ float s[256];
  const int t = int(threadIdx.x);
  s[t] = in[t];
  out[t] = s[(t + 1) % n];  // needs a __syncthreads() before this read
}

__global__ void uninitialised_shared_kernel(float* out, int write) {
  __shared__ float s[256];
  // A shared array that only other launches write (a C++ compiler may fold reads of a static
  // that nothing writes to its zero initialiser).
  if (write) s[threadIdx.x] = 0.f;
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void partial_barrier_kernel(float* out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}

__global__ void divergent_barriers_kernel(float* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.f;
}

__global__ void shuffle_exited_lane_kernel(float* out) {
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, float(threadIdx.x), 1);
}

__global__ void deadlock_kernel(float* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    __syncwarp();
  }
  out[threadIdx.x] = 1.f;
}

using CubBlock = cub::BlockReduce<float, 128, cub::BLOCK_REDUCE_WARP_REDUCTIONS>;
using CubWarp8 = cub::WarpReduce<float, 8>;

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__global__ void cub_reductions_kernel(const float* in, float* out) {
  __shared__ CubBlock::TempStorage tmp;
  const int t = int(threadIdx.x);
  const float v = in[t];
  float r = CubBlock(tmp).Sum(v);
  if (t == 0) out[0] = r;
  __syncthreads();
  r = CubBlock(tmp).Sum(v, 70);
  if (t == 0) out[1] = r;
  __syncthreads();
  r = CubBlock(tmp).Reduce(v, MaxOp{});
  if (t == 0) out[2] = r;
  CubWarp8::TempStorage none;
  r = CubWarp8(none).Sum(v);
  if (t % 8 == 0) out[3 + t / 8] = r;
  r = CubWarp8(none).Sum(v, 5);
  if (t % 8 == 0) out[19 + t / 8] = r;
}

__global__ void store_kernel(float* out, int i) { out[i] = 1.f; }

__global__ void cp_async_no_wait_kernel(const float* src, float* out) {
  __shared__ __align__(16) float s[128];
  kernels::mma::cp_async_16(&s[4 * threadIdx.x], src + 4 * threadIdx.x);
  kernels::mma::cp_async_commit();
  __syncwarp();  // a barrier is not a wait: the copies may still be in flight
  for (int i = int(threadIdx.x); i < 128; i += 32) out[i] = s[i];
}

__device__ int recurse(int d) {
  volatile char pad[512];
  pad[0] = char(d);
  return d > 1000000 ? 0 : recurse(d + 1) + pad[0];
}

__global__ void stack_overflow_kernel(float* out) { out[threadIdx.x] = float(recurse(0)); }

cudaError_t done() { return cudaGetLastError(); }

}  // namespace

cudaError_t run_warp_and_block_ops(const float* in, float* out) {
  launch(warp_and_block_ops_kernel, 1, 64, 0, nullptr, in, out);
  return done();
}
cudaError_t run_missing_barrier(const float* in, float* out, int n) {
  launch(missing_barrier_kernel, 1, unsigned(n), 0, nullptr, in, out, n);
  return done();
}
cudaError_t run_uninitialised_shared(float* out, int n) {
  launch(uninitialised_shared_kernel, 1, unsigned(n), 0, nullptr, out, 0);
  return done();
}
cudaError_t run_partial_barrier(float* out) {
  launch(partial_barrier_kernel, 1, 32, 0, nullptr, out);
  return done();
}
cudaError_t run_divergent_barriers(float* out) {
  launch(divergent_barriers_kernel, 1, 32, 0, nullptr, out);
  return done();
}
cudaError_t run_shuffle_exited_lane(float* out) {
  launch(shuffle_exited_lane_kernel, 1, 32, 0, nullptr, out);
  return done();
}
cudaError_t run_deadlock(float* out) {
  launch(deadlock_kernel, 1, 32, 0, nullptr, out);
  return done();
}
cudaError_t run_cub_reductions(const float* in, float* out) {
  launch(cub_reductions_kernel, 1, 128, 0, nullptr, in, out);
  return done();
}
cudaError_t run_cp_async_without_wait(const float* src, float* out) {
  launch(cp_async_no_wait_kernel, 1, 32, 0, nullptr, src, out);
  return done();
}
cudaError_t run_too_many_threads(float* out) {
  launch(store_kernel, 1, 2048, 0, nullptr, out, 0);
  return done();
}
cudaError_t run_too_much_dynamic_smem(float* out) {
  launch(store_kernel, 1, 32, 64 * 1024, nullptr, out, 0);
  return done();
}
cudaError_t run_out_of_bounds(float* out, int n) {
  launch(store_kernel, 1, 1, 0, nullptr, out, n);
  return done();
}
cudaError_t run_stack_overflow(float* out) {
  launch(stack_overflow_kernel, 1, 1, 0, nullptr, out);
  return done();
}

}  // namespace gan::interp_test
