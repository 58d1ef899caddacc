#include <algorithm>
#include <string>

#include "kernels/block_reduce.h"
#include "kernels/projection_head.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kRowThreads = 256;   // forward and dh: one block per row
constexpr int kColThreads = 128;   // dw, dbias, de: one thread per column
constexpr int kWarpsPerBlock = 8;  // dy: one warp per (b, k)

constexpr int kSeveral = -1;  // a row with several non-zero labels (or NaN ones)
constexpr int kNone = -2;     // a row with none

// The class row b selects: its one k with y_bk != 0, kSeveral or kNone. Warp 0 scans the row with
// ballots (32 labels per step, stopping at the second non-zero one); every thread gets the answer.
// Call from every thread of the block (it synchronises).
__device__ int select_class(const float* __restrict__ yr, int64_t K, int* slot) {
  if (threadIdx.x < 32) {
    const int lane = int(threadIdx.x);
    int count = 0;
    int64_t first = -1;
    for (int64_t k0 = 0; k0 < K && count < 2; k0 += 32) {
      const int64_t k = k0 + lane;
      const unsigned m = __ballot_sync(0xffffffffu, k < K && yr[k] != 0.f);
      if (m != 0u && first < 0) first = k0 + __ffs(int(m)) - 1;
      count += __popc(m);
    }
    if (lane == 0) *slot = count == 1 ? int(first) : (count == 0 ? kNone : kSeveral);
  }
  __syncthreads();
  return *slot;
}

// v_bc = w_c + sum over k with y_bk != 0 of y_bk e_kc, for a row whose selection is s.
__device__ __forceinline__ float row_weight(const float* __restrict__ w,
                                            const float* __restrict__ yr,
                                            const float* __restrict__ e, int64_t C, int64_t K,
                                            int s, int64_t c) {
  float v = w[c];
  if (s >= 0) {
    v += yr[s] * e[int64_t(s) * C + c];
  } else if (s == kSeveral) {
    for (int64_t k = 0; k < K; ++k) {
      const float yk = yr[k];
      if (yk != 0.f) v += yk * e[k * C + c];
    }
  }
  return v;
}

__global__ void projection_head_forward_kernel(const float* __restrict__ h,
                                               const float* __restrict__ w,
                                               const float* __restrict__ bias,
                                               const float* __restrict__ y,
                                               const float* __restrict__ e, int64_t C, int64_t K,
                                               float* __restrict__ out) {
  __shared__ int slot;
  __shared__ BlockReduceStorage<kRowThreads> red;
  const int64_t b = blockIdx.x;
  const float* yr = y + b * K;
  const float* hr = h + b * C;
  const int s = select_class(yr, K, &slot);
  float acc = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += kRowThreads)
    acc += hr[c] * row_weight(w, yr, e, C, K, s, c);
  acc = block_reduce<false, kRowThreads>(acc, red);
  if (threadIdx.x == 0) out[b] = (bias ? bias[0] : 0.f) + acc;
}

// dh (when asked) and each row's selection into sel.
__global__ void projection_head_rows_backward_kernel(const float* __restrict__ w,
                                                     const float* __restrict__ y,
                                                     const float* __restrict__ e,
                                                     const float* __restrict__ g, int64_t C,
                                                     int64_t K, float* __restrict__ dh,
                                                     int* __restrict__ sel) {
  __shared__ int slot;
  const int64_t b = blockIdx.x;
  const float* yr = y + b * K;
  const int s = select_class(yr, K, &slot);
  if (threadIdx.x == 0) sel[b] = s;
  if (!dh) return;
  const float gb = g[b];
  for (int64_t c = threadIdx.x; c < C; c += kRowThreads)
    dh[b * C + c] = gb * row_weight(w, yr, e, C, K, s, c);
}

// One thread per column c: dw_c and de_kc summed over the rows in order (de zeroed before); the
// thread of column 0 also sums dbias (its block runs even for C = 0).
__global__ void projection_head_params_backward_kernel(
    const float* __restrict__ h, const float* __restrict__ y, const float* __restrict__ g,
    const int* __restrict__ sel, int64_t B, int64_t C, int64_t K, float* __restrict__ dw,
    float* __restrict__ dbias, float* __restrict__ de) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (dbias && c == 0) {
    float s = 0.f;
    for (int64_t b = 0; b < B; ++b) s += g[b];
    *dbias = s;
  }
  if (c >= C) return;
  float sw = 0.f;
  for (int64_t b = 0; b < B; ++b) {
    const float gh = g[b] * h[b * C + c];
    sw += gh;
    if (!de) continue;
    const int s = sel[b];
    const float* yr = y + b * K;
    if (s >= 0) {
      de[int64_t(s) * C + c] += yr[s] * gh;
    } else if (s == kSeveral) {
      for (int64_t k = 0; k < K; ++k) {
        const float yk = yr[k];
        if (yk != 0.f) de[k * C + c] += yk * gh;
      }
    }
  }
  if (dw) dw[c] = sw;
}

// dy_bk = g_b <e_k, h_b>: one warp per (b, k), lanes over c, a shuffle tree.
__global__ void projection_head_labels_backward_kernel(const float* __restrict__ h,
                                                       const float* __restrict__ e,
                                                       const float* __restrict__ g, int64_t B,
                                                       int64_t C, int64_t K,
                                                       float* __restrict__ dy) {
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = int(threadIdx.x % 32);
  if (i >= B * K) return;  // the whole warp
  const int64_t b = i / K, k = i % K;
  float s = 0.f;
  for (int64_t c = lane; c < C; c += 32) s += e[k * C + c] * h[b * C + c];
  for (int off = 16; off > 0; off /= 2) s += __shfl_down_sync(0xffffffffu, s, off);
  if (lane == 0) dy[i] = g[b] * s;
}

void check_sizes(int64_t B, int64_t C, int64_t K, const char* fn) {
  GAN_CHECK(B >= 0 && C >= 0 && K >= 0 && K < (int64_t(1) << 31),
            std::string(fn) + ": negative size or more than 2^31 classes");
}

}  // namespace

void projection_head_forward_cuda(const float* h, const float* w, const float* bias, const float* y,
                                  const float* e, int64_t B, int64_t C, int64_t K, float* out,
                                  cudaStream_t stream) {
  GAN_NVTX("projection_head");
  check_sizes(B, C, K, "projection_head_forward_cuda");
  if (B == 0) return;
  launch(projection_head_forward_kernel, dim3(unsigned(B)), kRowThreads, 0, stream, h, w, bias, y,
         e, C, K, out);
  GAN_CUDA_CHECK_LAUNCH();
}

void projection_head_backward_cuda(const float* h, const float* w, const float* y, const float* e,
                                   const float* g, int64_t B, int64_t C, int64_t K, float* dh,
                                   float* dw, float* dbias, float* de, float* dy, int* sel,
                                   cudaStream_t stream) {
  GAN_NVTX("projection_head_backward");
  check_sizes(B, C, K, "projection_head_backward_cuda");
  if (de && K * C > 0)
    GAN_CUDA_CHECK(cudaMemsetAsync(de, 0, size_t(K * C) * sizeof(float), stream));
  if (B == 0) {  // no rows: the sums are zero
    if (dw && C > 0) GAN_CUDA_CHECK(cudaMemsetAsync(dw, 0, size_t(C) * sizeof(float), stream));
    if (dbias) GAN_CUDA_CHECK(cudaMemsetAsync(dbias, 0, sizeof(float), stream));
    return;
  }
  launch(projection_head_rows_backward_kernel, dim3(unsigned(B)), kRowThreads, 0, stream, w, y, e,
         g, C, K, dh, sel);
  GAN_CUDA_CHECK_LAUNCH();
  if (dw || de || dbias) {  // at least one block: dbias is summed by column 0's thread
    const int64_t blocks = std::max<int64_t>(1, (C + kColThreads - 1) / kColThreads);
    launch(projection_head_params_backward_kernel, dim3(unsigned(blocks)), kColThreads, 0, stream,
           h, y, g, static_cast<const int*>(sel), B, C, K, dw, dbias, de);
    GAN_CUDA_CHECK_LAUNCH();
  }
  if (dy && K > 0) {
    const int64_t warps = B * K;
    launch(projection_head_labels_backward_kernel,
           dim3(unsigned((warps + kWarpsPerBlock - 1) / kWarpsPerBlock)), kWarpsPerBlock * 32, 0,
           stream, h, e, g, B, C, K, dy);
    GAN_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace gan::kernels
