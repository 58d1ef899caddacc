#include <algorithm>

#include <cub/block/block_reduce.cuh>

#include "kernels/bf16.h"
#include "kernels/reduce.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kRowThreads = 256;        // rows kernel: one block reduces a row chunk
constexpr int kColX = 32, kColY = 8;    // cols kernel: 32 columns x 8 row lanes
constexpr int64_t kMinRowChunk = 2048;  // below this a split is not worth a block
constexpr int64_t kMinColChunk = 64;

struct Plan {
  int64_t splits = 1;  // blocks along r
  int64_t chunk = 0;   // rows per split
};

Plan plan(int64_t outer, int64_t r, int64_t inner) {
  Plan p;
  const int64_t target = 2 * int64_t(device_sm_count());
  const int64_t base = inner == 1 ? outer : outer * ((inner + kColX - 1) / kColX);
  if (base < target && r > 0) {
    const int64_t min_chunk = inner == 1 ? kMinRowChunk : kMinColChunk;
    int64_t s = (target + base - 1) / base;
    s = std::min(s, (r + min_chunk - 1) / min_chunk);
    p.splits = std::clamp<int64_t>(s, 1, 65535);
  }
  p.chunk = (r + p.splits - 1) / p.splits;
  if (p.chunk > 0) p.splits = (r + p.chunk - 1) / p.chunk;
  if (p.splits < 1) p.splits = 1;
  return p;
}

using RowReduce = cub::BlockReduce<float, kRowThreads, cub::BLOCK_REDUCE_WARP_REDUCTIONS>;

// inner == 1. Block b = (o, s) sums x[o, s*chunk : (s+1)*chunk).
// out: y[o] (splits == 1, with scale/accumulate) or partial[o * splits + s].
__global__ void reduce_rows_kernel(const float* __restrict__ x, int64_t outer, int64_t r,
                                   int64_t splits, int64_t chunk, float scale, bool accumulate,
                                   float* __restrict__ out) {
  __shared__ RowReduce::TempStorage tmp;
  for (int64_t b = blockIdx.x; b < outer * splits; b += gridDim.x) {
    const int64_t o = b / splits, s = b - o * splits;
    const int64_t begin = s * chunk, end = min(r, begin + chunk);
    const float* row = x + o * r;
    float v = 0.f;
    for (int64_t k = begin + threadIdx.x; k < end; k += kRowThreads) v += row[k];
    const float t = RowReduce(tmp).Sum(v);  // thread 0
    if (threadIdx.x == 0) {
      if (splits == 1)
        out[o] = (accumulate ? out[o] : 0.f) + scale * t;
      else
        out[b] = t;
    }
    __syncthreads();  // tmp is reused by the next row
  }
}

// inner > 1 (or any inner with an activation). Block (cx, o, s): columns [cx*32, cx*32+32) of
// x[o, s*chunk : (s+1)*chunk, :]. out: y[o, i] (splits == 1) or partial[(o * splits + s) * inner
// + i]. With act_y: each element is first multiplied by the activation's derivative read from
// act_y (1 where act_y > 0, else slope) and written to dz, or rounded to bf16 into dz16 when that
// is not null (bias_act_backward).
__global__ void reduce_cols_kernel(const float* __restrict__ x, int64_t outer, int64_t r,
                                   int64_t inner, int64_t splits, int64_t chunk, float scale,
                                   bool accumulate, float* __restrict__ out,
                                   const float* __restrict__ act_y, bool tanh, float slope,
                                   float* __restrict__ dz, uint16_t* __restrict__ dz16,
                                   const uint16_t* __restrict__ x16,
                                   const uint16_t* __restrict__ act_y16) {
  __shared__ float part[kColY][kColX + 1];
  const int64_t i = int64_t(blockIdx.x) * kColX + threadIdx.x;
  const int64_t s = blockIdx.z;
  const int64_t begin = s * chunk, end = min(r, begin + chunk);
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    float v = 0.f;
    if (i < inner) {
      const int64_t off = o * r * inner + i;
      if (act_y || act_y16) {
        // bf16 activations: y and dy read as bf16 (x16, act_y16), the math in float32.
        for (int64_t k = begin + threadIdx.y; k < end; k += kColY) {
          const int64_t j = off + k * inner;
          const float a = act_y16 ? bf16_to_f32(act_y16[j]) : act_y[j];
          const float d = x16 ? bf16_to_f32(x16[j]) : x[j];
          const float g = d * (tanh ? 1.f - a * a : a > 0.f ? 1.f : slope);
          if (dz16)
            dz16[j] = f32_to_bf16(g);
          else
            dz[j] = g;
          v += g;
        }
      } else {
        const float* base = x + off;
        for (int64_t k = begin + threadIdx.y; k < end; k += kColY) v += base[k * inner];
      }
    }
    part[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.y == 0 && i < inner && out) {  // (out null: dz only, no sums)
      float t = 0.f;
      for (int w = 0; w < kColY; ++w) t += part[w][threadIdx.x];
      if (splits == 1) {
        const int64_t j = o * inner + i;
        out[j] = (accumulate ? out[j] : 0.f) + scale * t;
      } else {
        out[(o * splits + s) * inner + i] = t;
      }
    }
    __syncthreads();
  }
}

void run_reduce(const float* x, int64_t outer, int64_t r, int64_t inner, const Plan& p, float scale,
                bool accumulate, float* out, cudaStream_t stream) {
  if (inner == 1) {
    const int64_t blocks = std::min<int64_t>(outer * p.splits, int64_t(1) << 30);
    launch(reduce_rows_kernel, unsigned(blocks), kRowThreads, 0, stream, x, outer, r, p.splits,
           p.chunk, scale, accumulate, out);
  } else {
    dim3 grid(unsigned((inner + kColX - 1) / kColX), unsigned(std::min<int64_t>(outer, 65535)),
              unsigned(p.splits));
    launch(reduce_cols_kernel, grid, dim3(kColX, kColY), 0, stream, x, outer, r, inner, p.splits,
           p.chunk, scale, accumulate, out, static_cast<const float*>(nullptr), false, 0.f,
           static_cast<float*>(nullptr), static_cast<uint16_t*>(nullptr),
           static_cast<const uint16_t*>(nullptr), static_cast<const uint16_t*>(nullptr));
  }
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t bias_act_backward_workspace_bytes(int64_t rows, int64_t k) {
  return reduce_sum_workspace_bytes(1, rows, k);
}

void bias_act_backward_cuda(const float* y, const float* dy, int64_t rows, int64_t k, bool tanh,
                            float slope, bool accumulate, float* dz, float* db, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream, uint16_t* dz16,
                            const uint16_t* y16, const uint16_t* dy16) {
  GAN_NVTX("bias_act_backward");
  GAN_CHECK(rows >= 0 && k >= 0, "bias_act_backward_cuda: negative size");
  GAN_CHECK(k < (int64_t(1) << 31) / kColX * kColX, "bias_act_backward_cuda: k too large");
  if (k == 0) return;
  const Plan p = plan(1, rows, k);
  const dim3 block(kColX, kColY);
  const auto grid = [k](int64_t splits) {
    return dim3(unsigned((k + kColX - 1) / kColX), 1u, unsigned(splits));
  };
  if (!db) {  // the activation's backward alone: dz, no bias gradient (no partials, no workspace)
    launch(reduce_cols_kernel, grid(p.splits), block, 0, stream, dy, int64_t(1), rows, k, p.splits,
           p.chunk, 1.f, false, static_cast<float*>(nullptr), y, tanh, slope, dz, dz16, dy16, y16);
    GAN_CUDA_CHECK_LAUNCH();
    return;
  }
  if (p.splits == 1) {
    launch(reduce_cols_kernel, grid(1), block, 0, stream, dy, int64_t(1), rows, k, int64_t(1),
           p.chunk, 1.f, accumulate, db, y, tanh, slope, dz, dz16, dy16, y16);
    GAN_CUDA_CHECK_LAUNCH();
    return;
  }
  GAN_CHECK(workspace_bytes >= size_t(p.splits * k) * sizeof(float),
            "bias_act_backward_cuda: workspace too small (ask bias_act_backward_workspace_bytes)");
  auto* partial = static_cast<float*>(workspace);
  launch(reduce_cols_kernel, grid(p.splits), block, 0, stream, dy, int64_t(1), rows, k, p.splits,
         p.chunk, 1.f, false, partial, y, tanh, slope, dz, dz16, dy16, y16);
  GAN_CUDA_CHECK_LAUNCH();
  Plan fin;
  fin.splits = 1;
  fin.chunk = p.splits;
  run_reduce(partial, 1, p.splits, k, fin, 1.f, accumulate, db, stream);
}

size_t reduce_sum_workspace_bytes(int64_t outer, int64_t r, int64_t inner) {
  const Plan p = plan(outer, r, inner);
  return p.splits > 1 ? size_t(outer * p.splits * inner) * sizeof(float) : 0;
}

void reduce_sum_cuda(const float* x, int64_t outer, int64_t r, int64_t inner, float scale,
                     bool accumulate, float* y, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream) {
  GAN_NVTX("reduce_sum");
  GAN_CHECK(outer >= 0 && r >= 0 && inner >= 0, "reduce_sum_cuda: negative size");
  GAN_CHECK(inner < (int64_t(1) << 31) / kColX * kColX, "reduce_sum_cuda: inner too large");
  if (outer == 0 || inner == 0) return;
  const Plan p = plan(outer, r, inner);
  if (p.splits == 1) {
    run_reduce(x, outer, r, inner, p, scale, accumulate, y, stream);
    return;
  }
  GAN_CHECK(workspace_bytes >= size_t(outer * p.splits * inner) * sizeof(float),
            "reduce_sum_cuda: workspace too small (ask reduce_sum_workspace_bytes)");
  auto* partial = static_cast<float*>(workspace);
  run_reduce(x, outer, r, inner, p, 1.f, false, partial, stream);
  // Second pass over (outer, splits, inner) in one block per output: no further split.
  Plan fin;
  fin.splits = 1;
  fin.chunk = p.splits;
  run_reduce(partial, outer, p.splits, inner, fin, scale, accumulate, y, stream);
}

}  // namespace gan::kernels
