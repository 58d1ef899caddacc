#include "kernels/random.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kThreads = 256;

// One thread per group of 4 outputs.
__global__ void philox_fill_kernel(float* __restrict__ out, int64_t n,
                                   const uint64_t* __restrict__ state, Dist d, double a, double b) {
  const uint64_t seed = state[0], offset = state[1];
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const Philox4 r = philox_group(seed, offset, uint64_t(g));
    for (int lane = 0; lane < 4; ++lane)
      if (g * 4 + lane < n) out[g * 4 + lane] = philox_value(r, lane, d, a, b);
  }
}

__global__ void philox_advance_kernel(uint64_t* state) { state[1] += 1; }

}  // namespace

void philox_fill_cuda(float* out, int64_t n, uint64_t* state, Dist d, double a, double b,
                      cudaStream_t stream) {
  GAN_NVTX(d == Dist::kNormal ? "normal_" : "uniform_");
  GAN_CHECK(n >= 0, "philox_fill_cuda: negative size");
  if (n > 0) {
    launch(philox_fill_kernel, grid_blocks((n + 3) / 4, kThreads), kThreads, 0, stream, out, n,
           state, d, a, b);
    GAN_CUDA_CHECK_LAUNCH();
  }
  launch(philox_advance_kernel, 1, 1, 0, stream, state);
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace gan::kernels
