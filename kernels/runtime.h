// What the kernels need from the CUDA runtime, in one kernels-side header: the stream handle,
// the launch helpers every launcher uses instead of <<<...>>>, device facts that size grids,
// and (through kernels/check.h) the error checks. Built with nvcc, launch() is <<<...>>>; built
// for the interpreter (GAN_INTERP, kernels/interpreter/), it runs the kernel on the CPU SIMT
// runtime. This is the one place where the
// kernel sources depend on the mode.
#pragma once

#include <cstddef>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cuda_runtime_api.h>

#include "kernels/check.h"
#include "kernels/common.h"

#if defined(GAN_INTERP)
#include "kernels/interpreter/simt.h"
#endif

// GAN_DYNAMIC_SHARED(T, name): in a kernel body, `name` is the block's dynamic shared memory (the
// launch's smem bytes), i.e. extern __shared__ T name[] (which has no C++ form for the
// interpreter: kernels/interpreter/kernel_builtins.h defines its own).
#if !defined(GAN_INTERP)
#define GAN_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]
#endif

namespace gan::kernels {

// Multiprocessors of the current device (cached after the first call).
int device_sm_count();

// Whether choices made by measurement are printed to stderr: $GAN_LOG_KERNELS (or its older name
// $GAN_LOG_CUDNN) set and not "0".
bool log_kernels();

// Median milliseconds of three runs of `run` on `stream` (CUDA events), after one warm-up run.
// Synchronises: for choices made before a graph capture, never inside one.
double time_with_events(cudaStream_t stream, const std::function<void()>& run);

#if defined(__CUDACC__) || defined(GAN_INTERP)

// kernel<<<grid, block, smem, stream>>>(args...). Check with GAN_CUDA_CHECK_LAUNCH() after it.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            A&&... args) {
#if defined(GAN_INTERP)
  (void)interp::launch_kernel(kernel, grid, block, smem, stream, std::forward<A>(args)...);
#else
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
#endif
}

#endif

}  // namespace gan::kernels
