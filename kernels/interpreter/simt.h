// The CPU SIMT interpreter's interface to kernel code (see docs/interpreter.md). Kernel sources
// built for the interpreter get kernels/interpreter/kernel_builtins.h force-included, which maps
// CUDA's built-ins (threadIdx, __syncthreads, shuffles, atomics, ...) onto the functions below; the
// launchers reach launch_kernel() through kernels/runtime.h. Everything here runs on the CPU:
// one fiber per CUDA thread, one OS thread per resident block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cuda_runtime_api.h>

namespace gan::interp {

// The CUDA thread a fiber runs (read by threadIdx, blockIdx, blockDim, gridDim).
struct ThreadState {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned lane;  // threadIdx's linear index % 32
};

// The CUDA thread running on this OS thread, or null outside a kernel.
extern thread_local ThreadState* tls_thread __attribute__((tls_model("initial-exec")));

inline ThreadState& self() { return *tls_thread; }

// Warp-synchronous operations: every lane named in `mask` must reach one with the same kind and
// mask; the runtime then computes each lane's result from all lanes' values.
enum class WarpOp : int { kSync, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll };
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width,
                 const std::source_location& loc);

// __syncthreads(): every thread of the block must reach the same barrier (same source line).
void block_sync(const std::source_location& loc);
// Reports a misuse found in kernel code (the launch fails with this message).
[[noreturn]] void kernel_fault(const char* what);

// cp.async for the interpreter (kernels/mma.h): copies are queued per thread, grouped by
// async_commit(), and performed by async_wait(n) for all but the newest n groups.
void async_copy(void* dst, const void* src, int bytes, int src_bytes);
void async_commit();
void async_wait(int n);

// Dynamic shared memory of the running block (extern __shared__), `launch smem` bytes.
void* dynamic_shared();

// Enqueues (or, while the stream is being captured, records) one kernel launch; `body` runs the
// kernel function for the current thread (called once per CUDA thread, on its fiber). Returns the
// launch's error (configuration errors immediately; execution errors too, since a stream runs its
// work as it is enqueued) and makes it the value of the next cudaGetLastError().
cudaError_t submit_launch(const void* fn, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          std::function<void()> body);

template <class... P, class... A>
cudaError_t launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                          cudaStream_t stream, A&&... args) {
  std::tuple<std::remove_cv_t<std::remove_reference_t<P>>...> values(std::forward<A>(args)...);
  return submit_launch(reinterpret_cast<const void*>(kernel), grid, block, smem, stream,
                       [kernel, values = std::move(values)]() { std::apply(kernel, values); });
}

// Runs `work` on `stream` now, or records it into the stream's capture (cuBLAS and cuDNN calls,
// which run their CPU references in this mode). `what` names it in error reports.
cudaError_t enqueue(cudaStream_t stream, const char* what, std::function<void()> work);

// Occupancy from the fixed H100 model: blocks of `threads` threads with `smem` bytes of shared
// memory per multiprocessor (no register model).
int max_blocks_per_sm(int threads, size_t smem);

}  // namespace gan::interp
