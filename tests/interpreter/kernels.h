// Kernels that exercise the interpreter (tests/interpreter/kernels.cu, built only for it): correct
// ones whose results are known, and ones with the classic mistakes it must report. Each runner
// launches on the legacy stream and returns the launch's error (cudaGetLastError()).
#pragma once

#include <cuda_runtime_api.h>

namespace gan::interp_test {

// out (64): warp sums by __shfl_down_sync and __shfl_xor_sync, __shfl_sync broadcasts,
// __shfl_up_sync prefix sums, ballot/any/all, a block tree sum with __syncthreads.
cudaError_t run_warp_and_block_ops(const float* in, float* out);
// out (n): s[t] = in[t] and out[t] = s[(t + 1) % n] without a barrier (a race).
cudaError_t run_missing_barrier(const float* in, float* out, int n);
// out (n): reads shared memory nothing wrote.
cudaError_t run_uninitialised_shared(float* out, int n);
// Barrier misuse: threads >= 16 return before __syncthreads.
cudaError_t run_partial_barrier(float* out);
// Barrier misuse: odd and even threads wait at different __syncthreads.
cudaError_t run_divergent_barriers(float* out);
// Shuffle misuse: lane 31 exits, the others shuffle with the full mask.
cudaError_t run_shuffle_exited_lane(float* out);
// Deadlock: thread 0 waits at __syncthreads while its warp waits at __syncwarp.
cudaError_t run_deadlock(float* out);
// The interpreter's CUB, one block of 128 threads: out[0] block sum, out[1] sum of the first 70,
// out[2] block max, out[3 + g] and out[19 + g] the sums of 8-lane logical warp g (all lanes, the
// first 5).
cudaError_t run_cub_reductions(const float* in, float* out);
// cp.async without cp.async.wait: reads shared memory the copies have not reached (NaN here).
cudaError_t run_cp_async_without_wait(const float* src, float* out);
// Launch-configuration errors: 2048 threads; 64 KB of dynamic shared memory without opt-in.
cudaError_t run_too_many_threads(float* out);
cudaError_t run_too_much_dynamic_smem(float* out);
// Writes out[n] (one past the end): the process must die naming the kernel.
cudaError_t run_out_of_bounds(float* out, int n);
// Unbounded recursion on the fiber stack: the process must die reporting a stack overflow.
cudaError_t run_stack_overflow(float* out);

}  // namespace gan::interp_test
