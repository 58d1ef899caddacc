#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include "kernels/block_reduce.h"
#include "kernels/loss.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kThreads = 1024;

using LossReduce = cub::BlockReduce<double, kThreads, cub::BLOCK_REDUCE_WARP_REDUCTIONS>;
using WarpReduceF = cub::WarpReduce<float>;

// Sum over the block in a fixed order (cub::BlockReduce), valid in thread 0. The storage is
// reusable on return (hinge calls it twice).
__device__ double block_sum(double v) {
  __shared__ LossReduce::TempStorage tmp;
  const double t = LossReduce(tmp).Sum(v);
  __syncthreads();
  return t;
}

// Warp-wide sum or max (cub::WarpReduce, lane 0's result) handed to every lane.
__device__ __forceinline__ float warp_all_sum(float v) {
  WarpReduceF::TempStorage none;  // empty: the shuffle specialisation
  return __shfl_sync(0xffffffffu, WarpReduceF(none).Sum(v), 0);
}
__device__ __forceinline__ float warp_all_max(float v) {
  WarpReduceF::TempStorage none;
  return __shfl_sync(0xffffffffu, WarpReduceF(none).Reduce(v, FMaxOp{}), 0);
}

__device__ __forceinline__ float sigmoid(float v) {
  if (v >= 0.f) return 1.f / (1.f + expf(-v));
  const float e = expf(v);
  return e / (1.f + e);
}

// One block. x, t (n) -> loss (1).
__global__ void bce_forward_kernel(const float* __restrict__ x, const float* __restrict__ t,
                                   float target, int64_t n, float* __restrict__ loss) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = x[i], y = t ? t[i] : target;
    s += double(fmaxf(v, 0.f) - v * y + log1pf(expf(-fabsf(v))));  // NaN x: NaN via v * y
  }
  const double total = block_sum(s);
  if (threadIdx.x == 0) *loss = n > 0 ? float(total / double(n)) : 0.f;
}

__global__ void bce_backward_kernel(const float* __restrict__ x, const float* __restrict__ t,
                                    float target, int64_t n, const float* __restrict__ dl,
                                    float* __restrict__ dx, float* __restrict__ dt) {
  const float g = *dl / float(n);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i], y = t ? t[i] : target;
    if (dx) dx[i] = g * (sigmoid(v) - y);
    if (dt) dt[i] = -g * v;
  }
}

// log sum_j exp(x_j) of one row, computed by a warp (every lane gets it).
__device__ float warp_logsumexp(const float* __restrict__ xr, int64_t c, int lane) {
  float m = -INFINITY;
  for (int64_t j = lane; j < c; j += 32) m = fmaxf(m, xr[j]);
  m = warp_all_max(m);
  if (isinf(m)) return m;
  float s = 0.f;
  for (int64_t j = lane; j < c; j += 32) s += expf(xr[j] - m);
  s = warp_all_sum(s);
  return m + logf(s);
}

// One block: warp w takes rows w, w + 32, ... (a fixed order: deterministic).
__global__ void cross_entropy_forward_kernel(const float* __restrict__ x,
                                             const float* __restrict__ t, int64_t rows, int64_t c,
                                             float* __restrict__ loss) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double s = 0;
  for (int64_t r = warp; r < rows; r += kThreads / 32) {
    const float* xr = x + r * c;
    const float* tr = t + r * c;
    const float lse = warp_logsumexp(xr, c, lane);
    for (int64_t j = lane; j < c; j += 32)
      if (tr[j] != 0.f) s += double(tr[j]) * double(lse - xr[j]);
  }
  const double total = block_sum(s);
  if (threadIdx.x == 0) *loss = rows > 0 ? float(total / double(rows)) : 0.f;
}

// A warp per row (grid-stride over rows: every warp of the grid takes rows w, w + warps, ...).
__global__ void cross_entropy_backward_kernel(const float* __restrict__ x,
                                              const float* __restrict__ t, int64_t rows, int64_t c,
                                              const float* __restrict__ dl,
                                              float* __restrict__ dx) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  const float g = *dl / float(rows);
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
    const float* xr = x + r * c;
    const float* tr = t + r * c;
    const float lse = warp_logsumexp(xr, c, lane);
    float tsum = 0.f;
    for (int64_t j = lane; j < c; j += 32) tsum += tr[j];
    tsum = warp_all_sum(tsum);
    for (int64_t j = lane; j < c; j += 32) dx[r * c + j] = g * (expf(xr[j] - lse) * tsum - tr[j]);
  }
}

// One block. real (nr), fake (nf) -> loss (1).
__global__ void hinge_d_forward_kernel(const float* __restrict__ real, int64_t nr,
                                       const float* __restrict__ fake, int64_t nf,
                                       float* __restrict__ loss) {
  double sr = 0, sf = 0;
  for (int64_t i = threadIdx.x; i < nr; i += kThreads) {
    const float v = real[i];
    sr += isnan(v) ? double(NAN) : double(fmaxf(0.f, 1.f - v));
  }
  for (int64_t i = threadIdx.x; i < nf; i += kThreads) {
    const float v = fake[i];
    sf += isnan(v) ? double(NAN) : double(fmaxf(0.f, 1.f + v));
  }
  const double tr = block_sum(sr);
  const double tf = block_sum(sf);
  if (threadIdx.x == 0) *loss = float((nr ? tr / double(nr) : 0.0) + (nf ? tf / double(nf) : 0.0));
}

__global__ void hinge_d_backward_kernel(const float* __restrict__ real, int64_t nr,
                                        const float* __restrict__ fake, int64_t nf,
                                        const float* __restrict__ dl, float* __restrict__ dreal,
                                        float* __restrict__ dfake) {
  const float g = *dl;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < nr + nf;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (i < nr) {
      if (dreal) dreal[i] = 1.f - real[i] > 0.f ? -g / float(nr) : 0.f;
    } else {
      const int64_t j = i - nr;
      if (dfake) dfake[j] = 1.f + fake[j] > 0.f ? g / float(nf) : 0.f;
    }
  }
}

}  // namespace

void bce_logits_forward_cuda(const float* x, const float* t, float target, int64_t n, float* loss,
                             cudaStream_t stream) {
  GAN_NVTX("bce_with_logits");
  GAN_CHECK(n >= 0, "bce_logits_forward_cuda: negative size");
  launch(bce_forward_kernel, 1, kThreads, 0, stream, x, t, target, n, loss);
  GAN_CUDA_CHECK_LAUNCH();
}

void bce_logits_backward_cuda(const float* x, const float* t, float target, int64_t n,
                              const float* dl, float* dx, float* dt, cudaStream_t stream) {
  GAN_NVTX("bce_with_logits_backward");
  if (n == 0) return;
  launch(bce_backward_kernel, grid_blocks(n, 256), 256, 0, stream, x, t, target, n, dl, dx, dt);
  GAN_CUDA_CHECK_LAUNCH();
}

void cross_entropy_forward_cuda(const float* x, const float* t, int64_t rows, int64_t c,
                                float* loss, cudaStream_t stream) {
  GAN_NVTX("cross_entropy");
  GAN_CHECK(rows >= 0 && c > 0, "cross_entropy_forward_cuda: bad size");
  launch(cross_entropy_forward_kernel, 1, kThreads, 0, stream, x, t, rows, c, loss);
  GAN_CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward_cuda(const float* x, const float* t, int64_t rows, int64_t c,
                                 const float* dl, float* dx, cudaStream_t stream) {
  GAN_NVTX("cross_entropy_backward");
  GAN_CHECK(rows >= 0 && c > 0, "cross_entropy_backward_cuda: bad size");
  if (rows == 0) return;
  launch(cross_entropy_backward_kernel, grid_blocks(rows * 32, 256), 256, 0, stream, x, t, rows, c,
         dl, dx);
  GAN_CUDA_CHECK_LAUNCH();
}

void hinge_d_forward_cuda(const float* real, int64_t nr, const float* fake, int64_t nf, float* loss,
                          cudaStream_t stream) {
  GAN_NVTX("hinge_d_loss");
  GAN_CHECK(nr >= 0 && nf >= 0, "hinge_d_forward_cuda: negative size");
  launch(hinge_d_forward_kernel, 1, kThreads, 0, stream, real, nr, fake, nf, loss);
  GAN_CUDA_CHECK_LAUNCH();
}

void hinge_d_backward_cuda(const float* real, int64_t nr, const float* fake, int64_t nf,
                           const float* dl, float* dreal, float* dfake, cudaStream_t stream) {
  GAN_NVTX("hinge_d_loss_backward");
  if (nr + nf == 0) return;
  launch(hinge_d_backward_kernel, grid_blocks(nr + nf, 256), 256, 0, stream, real, nr, fake, nf, dl,
         dreal, dfake);
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace gan::kernels
