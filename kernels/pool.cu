#include "kernels/pool.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int argmax4_dev(const float w[4]) {
  int best = 0;
  for (int i = 1; i < 4; ++i) {
    if (isnan(w[best])) break;
    if (isnan(w[i]) || w[i] > w[best]) best = i;
  }
  return best;
}

// One thread per output element; each writes its whole 2x2 window of dx in backward, so every
// dx element is written exactly once (no atomics).
template <bool kBackward>
__global__ void pool_kernel(const float* __restrict__ x, const float* __restrict__ dy, int64_t n,
                            int64_t h, int64_t w, int64_t c, float* __restrict__ out) {
  const int64_t ho = h / 2, wo = w / 2, total = n * ho * wo * c;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ch = e % c, j = (e / c) % wo, i = (e / (c * wo)) % ho, b = e / (c * wo * ho);
    const int64_t idx[4] = {
        ((b * h + 2 * i) * w + 2 * j) * c + ch, ((b * h + 2 * i) * w + 2 * j + 1) * c + ch,
        ((b * h + 2 * i + 1) * w + 2 * j) * c + ch, ((b * h + 2 * i + 1) * w + 2 * j + 1) * c + ch};
    const float win[4] = {x[idx[0]], x[idx[1]], x[idx[2]], x[idx[3]]};
    const int best = argmax4_dev(win);
    if constexpr (kBackward) {
      for (int t = 0; t < 4; ++t) out[idx[t]] = t == best ? dy[e] : 0.f;
    } else {
      out[e] = win[best];
    }
  }
}

}  // namespace

void max_pool2x2_forward_cuda(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, float* y,
                              cudaStream_t stream) {
  GAN_NVTX("max_pool2x2");
  const int64_t total = n * (h / 2) * (w / 2) * c;
  if (total == 0) return;
  launch(pool_kernel<false>, grid_blocks(total, kThreads), kThreads, 0, stream, x, nullptr, n, h, w,
         c, y);
  GAN_CUDA_CHECK_LAUNCH();
}

void max_pool2x2_backward_cuda(const float* x, const float* dy, int64_t n, int64_t h, int64_t w,
                               int64_t c, float* dx, cudaStream_t stream) {
  GAN_NVTX("max_pool2x2_backward");
  const int64_t total = n * (h / 2) * (w / 2) * c;
  if (total == 0) return;
  launch(pool_kernel<true>, grid_blocks(total, kThreads), kThreads, 0, stream, x, dy, n, h, w, c,
         dx);
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace gan::kernels
