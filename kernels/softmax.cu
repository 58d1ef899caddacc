#include "kernels/block_reduce.h"
#include "kernels/runtime.h"
#include "kernels/softmax.h"

namespace gan::kernels {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    softmax_rows_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  __shared__ BlockReduceStorage<kThreads> red;
  const float* xr = x + int64_t(blockIdx.x) * n;
  float* yr = y + int64_t(blockIdx.x) * n;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, xr[j]);
  m = block_reduce<true>(m, red);
  float l = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) l += expf(xr[j] - m);
  l = block_reduce<false>(l, red);
  const float inv = 1.f / l;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = expf(xr[j] - m) * inv;
}

__global__ void __launch_bounds__(kThreads)
    softmax_rows_backward_kernel(const float* __restrict__ y, const float* __restrict__ dy,
                                 float* __restrict__ dx, int64_t n) {
  __shared__ BlockReduceStorage<kThreads> red;
  const int64_t off = int64_t(blockIdx.x) * n;
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += dy[off + j] * y[off + j];
  s = block_reduce<false>(s, red);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    dx[off + j] = y[off + j] * (dy[off + j] - s);
}

constexpr int kTile = 32;

// grid (ceil(n / 32), ceil(m / 32), B), block (32, 8).
__global__ void transpose_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t m,
                                 int64_t n) {
  __shared__ float t[kTile][kTile + 1];
  const int64_t b = blockIdx.z;
  const int64_t i0 = int64_t(blockIdx.y) * kTile, j0 = int64_t(blockIdx.x) * kTile;
  const float* xb = x + b * m * n;
  float* yb = y + b * m * n;
  for (int r = threadIdx.y; r < kTile; r += blockDim.y) {
    const int64_t i = i0 + r, j = j0 + threadIdx.x;
    if (i < m && j < n) t[r][threadIdx.x] = xb[i * n + j];
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kTile; r += blockDim.y) {
    const int64_t j = j0 + r, i = i0 + threadIdx.x;
    if (i < m && j < n) yb[j * m + i] = t[threadIdx.x][r];
  }
}

}  // namespace

void softmax_rows_cuda(const float* x, float* y, int64_t rows, int64_t n, cudaStream_t stream) {
  GAN_NVTX("softmax");
  GAN_CHECK(rows >= 0 && rows <= INT32_MAX && n >= 0, "softmax_rows_cuda: bad size");
  if (rows == 0 || n == 0) return;
  launch(softmax_rows_kernel, unsigned(rows), kThreads, 0, stream, x, y, n);
  GAN_CUDA_CHECK_LAUNCH();
}

void softmax_rows_backward_cuda(const float* y, const float* dy, float* dx, int64_t rows, int64_t n,
                                cudaStream_t stream) {
  GAN_NVTX("softmax_backward");
  GAN_CHECK(rows >= 0 && rows <= INT32_MAX && n >= 0, "softmax_rows_backward_cuda: bad size");
  if (rows == 0 || n == 0) return;
  launch(softmax_rows_backward_kernel, unsigned(rows), kThreads, 0, stream, y, dy, dx, n);
  GAN_CUDA_CHECK_LAUNCH();
}

void transpose_cuda(const float* x, float* y, int64_t b, int64_t m, int64_t n,
                    cudaStream_t stream) {
  GAN_NVTX("transpose");
  GAN_CHECK(b >= 0 && b <= 65535 && m >= 0 && n >= 0, "transpose_cuda: bad size");
  if (b == 0 || m == 0 || n == 0) return;
  const dim3 grid(unsigned((n + kTile - 1) / kTile), unsigned((m + kTile - 1) / kTile),
                  unsigned(b));
  launch(transpose_kernel, grid, dim3(kTile, 8), 0, stream, x, y, m, n);
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace gan::kernels
