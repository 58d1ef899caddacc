// Batch normalisation kernels (contract and formulas in kernels/batchnorm.h).
//
// Layout: x is (R, C) row-major, channels contiguous. A block is 32 channels (threadIdx.x, one
// warp reads 32 consecutive floats of a row: coalesced) x 8 row lanes (threadIdx.y). The grid is
// (channel tiles) x (row splits): the rows are G groups of S = R / G (G = 1 without per-group
// gamma and beta), each group cut into spg splits of `chunk` rows (the last may have fewer);
// block (t, s) covers channels [32 t, 32 t + 32) and the rows of split s (group s / spg), and
// lane ty of it takes the split's rows ty, + 8, + 16, ...
//
// Determinism: every reduction is a fixed sequence of float operations for a given (R, C) and
// SM count (the split plan depends on both): per-thread loops in row order, lanes merged 0..7 in
// order, splits merged in a fixed lane-strided order. No atomics.
#include <algorithm>

#include "kernels/batchnorm.h"
#include "kernels/bf16.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kTx = 32;                   // channels per block
constexpr int kTy = 8;                    // row lanes per block
constexpr int64_t kMinRowsPerSplit = 64;  // at least 8 rows per lane
constexpr int64_t kMaxSplits = 128;       // every apply block reads 2 x 32 x splits partials

struct Plan {
  int64_t tiles = 1;   // channel tiles (grid x)
  int64_t splits = 1;  // row splits (grid y): groups x spg
  int64_t spg = 1;     // splits per group
  int64_t S = 0;       // rows per group
  int64_t chunk = 0;   // rows per split (the last split of a group may have fewer)
};

// Enough blocks to fill the GPU (4 blocks of 256 threads per SM) when the channel tiles and
// groups alone do not, without splits shorter than kMinRowsPerSplit rows, and at most kMaxSplits
// splits (unless there are more groups) so that the redundant per-block merge of the partials
// stays small next to the block's rows. G = 1 gives one group of all R rows.
Plan plan(int64_t R, int64_t C, int64_t G) {
  Plan p;
  p.tiles = std::max<int64_t>((C + kTx - 1) / kTx, 1);
  p.S = R / G;
  const int64_t target = 4 * int64_t(device_sm_count());
  int64_t s = (target + p.tiles * G - 1) / (p.tiles * G);
  s = std::min(s, (p.S + kMinRowsPerSplit - 1) / kMinRowsPerSplit);
  s = std::clamp<int64_t>(s, 1, std::max<int64_t>(kMaxSplits / G, 1));
  p.chunk = p.S > 0 ? (p.S + s - 1) / s : 0;
  p.spg = p.chunk > 0 ? (p.S + p.chunk - 1) / p.chunk : 1;  // no empty split
  p.splits = G * p.spg;
  return p;
}

// Rows [begin, end) of split j.
__device__ __forceinline__ void split_range(int64_t S, int64_t spg, int64_t chunk, int64_t j,
                                            int64_t& begin, int64_t& end) {
  const int64_t g = j / spg;
  begin = g * S + (j - g * spg) * chunk;
  end = min((g + 1) * S, begin + chunk);
}

// Activations are float32 or bf16 (TA = uint16_t): loaded into float32, stored rounded.
__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(uint16_t v) { return bf16_to_f32(v); }
__device__ __forceinline__ void st(float& d, float v) { d = v; }
__device__ __forceinline__ void st(uint16_t& d, float v) { d = f32_to_bf16(v); }

// Welford's update of (n, mean, m2) with one value.
__device__ __forceinline__ void welford(float& n, float& mean, float& m2, float v) {
  n += 1.f;
  const float d = v - mean;
  mean += d / n;
  m2 += d * (v - mean);
}

// Chan et al.'s merge of (nb, mb, m2b) into (na, ma, m2a). The branches depend on counts only.
__device__ __forceinline__ void chan_merge(float& na, float& ma, float& m2a, float nb, float mb,
                                           float m2b) {
  if (nb == 0.f) return;
  if (na == 0.f) {
    na = nb, ma = mb, m2a = m2b;
    return;
  }
  const float n = na + nb;
  const float wb = nb / n;
  const float d = mb - ma;
  ma += d * wb;
  m2a += m2b + d * d * (na * wb);
  na = n;
}

template <BnAct kAct>
__device__ __forceinline__ float act_f(float z, float slope) {
  if constexpr (kAct == BnAct::kRelu) return z < 0.f ? 0.f : z;
  if constexpr (kAct == BnAct::kLeakyRelu) return z < 0.f ? slope * z : z;
  return z;
}

template <BnAct kAct>
__device__ __forceinline__ float act_grad(float z, float slope) {
  if constexpr (kAct == BnAct::kRelu) return z <= 0.f ? 0.f : 1.f;  // NaN z: 1
  if constexpr (kAct == BnAct::kLeakyRelu) return z > 0.f ? 1.f : slope;
  return 1.f;
}

// The pre-activation, written once so that forward and backward round it identically.
__device__ __forceinline__ float xhat_of(float v, float mean, float invstd) {
  return (v - mean) * invstd;
}

// ---- forward training, kernel 1: per-(split, channel) Welford partials.
// x (R, C) -> part_mean, part_m2 (splits, C).
template <class TA>
__global__ void __launch_bounds__(kTx* kTy)
    bn_stats_kernel(const TA* __restrict__ x, int64_t C, int64_t S, int64_t spg, int64_t chunk,
                    float* __restrict__ part_mean, float* __restrict__ part_m2) {
  __shared__ float sh_n[kTy][kTx], sh_mean[kTy][kTx], sh_m2[kTy][kTx];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = int64_t(blockIdx.x) * kTx + tx;
  const int64_t s = blockIdx.y;
  int64_t begin, end;
  split_range(S, spg, chunk, s, begin, end);
  float n = 0.f, mean = 0.f, m2 = 0.f;
  if (c < C) {
    const TA* p = x + c;
    int64_t k = begin + ty;
    for (; k + 3 * kTy < end; k += 4 * kTy) {  // four loads in flight, updates in row order
      const float v0 = ld(p[k * C]), v1 = ld(p[(k + kTy) * C]);
      const float v2 = ld(p[(k + 2 * kTy) * C]), v3 = ld(p[(k + 3 * kTy) * C]);
      welford(n, mean, m2, v0);
      welford(n, mean, m2, v1);
      welford(n, mean, m2, v2);
      welford(n, mean, m2, v3);
    }
    for (; k < end; k += kTy) welford(n, mean, m2, ld(p[k * C]));
  }
  sh_n[ty][tx] = n, sh_mean[ty][tx] = mean, sh_m2[ty][tx] = m2;
  __syncthreads();
  if (ty == 0 && c < C) {
    for (int w = 1; w < kTy; ++w)
      chan_merge(n, mean, m2, sh_n[w][tx], sh_mean[w][tx], sh_m2[w][tx]);
    part_mean[s * C + c] = mean;
    part_m2[s * C + c] = m2;
  }
}

// ---- forward apply (training: merge the partials first; eval: the running statistics).
// x (R, C), gamma, beta (G, C) or null -> y (R, C); split 0 writes save_mean, save_invstd (C) and,
// in training, the updated running statistics new_run_mean/var (C) (the same buffers as
// run_mean/var: each element is read, then written, by one thread). Eval reads run_mean/var only.
template <bool kTraining, BnAct kAct, class TA>
__global__ void __launch_bounds__(kTx* kTy)
    bn_forward_apply_kernel(const TA* __restrict__ x, const float* __restrict__ gamma,
                            const float* __restrict__ beta, int64_t R, int64_t C, int64_t splits,
                            int64_t S, int64_t spg, int64_t chunk,
                            const float* __restrict__ part_mean, const float* __restrict__ part_m2,
                            float momentum, float eps, float slope, const float* run_mean,
                            const float* run_var, float* new_run_mean, float* new_run_var,
                            TA* __restrict__ y, float* __restrict__ save_mean,
                            float* __restrict__ save_invstd) {
  __shared__ float sh_n[kTy][kTx], sh_mean[kTy][kTx], sh_m2[kTy][kTx];
  __shared__ float sh_mu[kTx], sh_is[kTx];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = int64_t(blockIdx.x) * kTx + tx;
  const bool first_split = blockIdx.y == 0;
  if constexpr (kTraining) {
    // Lane ty merges splits ty, ty + 8, ... in order; lane 0 then merges lanes 1..7 in order.
    // Every block of a channel tile computes bitwise the same statistics.
    float n = 0.f, mean = 0.f, m2 = 0.f;
    if (c < C)
      for (int64_t j = ty; j < splits; j += kTy) {
        int64_t jb, je;
        split_range(S, spg, chunk, j, jb, je);
        chan_merge(n, mean, m2, float(je - jb), part_mean[j * C + c], part_m2[j * C + c]);
      }
    sh_n[ty][tx] = n, sh_mean[ty][tx] = mean, sh_m2[ty][tx] = m2;
    __syncthreads();
    if (ty == 0 && c < C) {
      for (int w = 1; w < kTy; ++w)
        chan_merge(n, mean, m2, sh_n[w][tx], sh_mean[w][tx], sh_m2[w][tx]);
      // m2 >= 0: Welford's increments d (v - mean') and Chan's d^2 terms are never negative in
      // rounded arithmetic (mean' lies between mean and v), so no clamp (which would hide NaN).
      const float invstd = 1.f / sqrtf(m2 / float(R) + eps);
      sh_mu[tx] = mean, sh_is[tx] = invstd;
      if (first_split) {
        if (save_mean) save_mean[c] = mean;
        if (save_invstd) save_invstd[c] = invstd;
        new_run_mean[c] = (1.f - momentum) * run_mean[c] + momentum * mean;
        new_run_var[c] = (1.f - momentum) * run_var[c] + momentum * (m2 / float(R - 1));
      }
    }
  } else {
    if (ty == 0 && c < C) {
      const float mean = run_mean[c], invstd = 1.f / sqrtf(run_var[c] + eps);
      sh_mu[tx] = mean, sh_is[tx] = invstd;
      if (first_split) {
        if (save_mean) save_mean[c] = mean;
        if (save_invstd) save_invstd[c] = invstd;
      }
    }
  }
  __syncthreads();
  if (c >= C) return;
  const float mean = sh_mu[tx], invstd = sh_is[tx];
  const int64_t gc = (int64_t(blockIdx.y) / spg) * C + c;  // this split's group
  const float g = gamma ? gamma[gc] : 1.f, b = beta ? beta[gc] : 0.f;
  int64_t begin, end;
  split_range(S, spg, chunk, blockIdx.y, begin, end);
#pragma unroll 4
  for (int64_t k = begin + ty; k < end; k += kTy) {
    const int64_t i = k * C + c;
    st(y[i], act_f<kAct>(fmaf(g, xhat_of(ld(x[i]), mean, invstd), b), slope));
  }
}

// ---- backward, kernel 1: per-(split, channel) sums of dy' and dy' xhat.
// x, dy (R, C), mean, invstd (C) -> part_dy, part_dyx (splits, C).
template <BnAct kAct, class TA>
__global__ void __launch_bounds__(kTx* kTy)
    bn_backward_reduce_kernel(const TA* __restrict__ x, const TA* __restrict__ dy,
                              const float* __restrict__ gamma, const float* __restrict__ beta,
                              const float* __restrict__ mean, const float* __restrict__ invstd,
                              int64_t C, int64_t S, int64_t spg, int64_t chunk, float slope,
                              float* __restrict__ part_dy, float* __restrict__ part_dyx) {
  __shared__ float sh_dy[kTy][kTx], sh_dyx[kTy][kTx];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = int64_t(blockIdx.x) * kTx + tx;
  const int64_t s = blockIdx.y;
  int64_t begin, end;
  split_range(S, spg, chunk, s, begin, end);
  float sdy = 0.f, sdyx = 0.f;
  if (c < C) {
    const float m = mean[c], is = invstd[c];
    const int64_t gc = (s / spg) * C + c;
    const float g = gamma ? gamma[gc] : 1.f, b = beta ? beta[gc] : 0.f;
#pragma unroll 4
    for (int64_t k = begin + ty; k < end; k += kTy) {
      const int64_t i = k * C + c;
      const float xhat = xhat_of(ld(x[i]), m, is);
      const float dyp = ld(dy[i]) * act_grad<kAct>(fmaf(g, xhat, b), slope);
      sdy += dyp;
      sdyx += dyp * xhat;
    }
  }
  sh_dy[ty][tx] = sdy, sh_dyx[ty][tx] = sdyx;
  __syncthreads();
  if (ty == 0 && c < C) {
    for (int w = 1; w < kTy; ++w) sdy += sh_dy[w][tx], sdyx += sh_dyx[w][tx];
    part_dy[s * C + c] = sdy;
    part_dyx[s * C + c] = sdyx;
  }
}

// ---- backward, kernel 2: merge the partial sums (when given), the first split of each group
// writes that group's dgamma/dbeta, every block writes dx for its rows (when dx is non-null; else
// the grid is one split per group). Ungrouped (G = 1): dx = gamma invstd (dy' - k1 - xhat k2)
// with the plain sums; grouped: dx = invstd (gamma dy' - k1 - xhat k2) with each split's sums
// weighted by its group's gamma (kernels/batchnorm.h).
template <BnAct kAct, class TA>
__global__ void __launch_bounds__(kTx* kTy)
    bn_backward_apply_kernel(const TA* __restrict__ x, const TA* __restrict__ dy,
                             const float* __restrict__ gamma, const float* __restrict__ beta,
                             const float* __restrict__ mean, const float* __restrict__ invstd,
                             int64_t R, int64_t C, int64_t splits, int64_t S, int64_t spg,
                             int64_t chunk, const float* __restrict__ part_dy,
                             const float* __restrict__ part_dyx, bool training, float slope,
                             TA* __restrict__ dx, float* __restrict__ dgamma,
                             float* __restrict__ dbeta, bool accumulate_dgamma,
                             bool accumulate_dbeta) {
  __shared__ float sh_dy[kTy][kTx], sh_dyx[kTy][kTx];
  __shared__ float sh_k1[kTx], sh_k2[kTx];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = int64_t(blockIdx.x) * kTx + tx;
  const bool grouped = splits != spg;
  // With dx, block y is split y; without, block y is the first split of group y.
  const int64_t split = dx ? int64_t(blockIdx.y) : int64_t(blockIdx.y) * spg;
  const int64_t gc = (split / spg) * C + c;
  if (part_dy) {
    float sdy = 0.f, sdyx = 0.f;
    if (c < C)
      for (int64_t j = ty; j < splits; j += kTy) {
        const float w = grouped && gamma ? gamma[(j / spg) * C + c] : 1.f;
        sdy = fmaf(w, part_dy[j * C + c], sdy), sdyx = fmaf(w, part_dyx[j * C + c], sdyx);
      }
    sh_dy[ty][tx] = sdy, sh_dyx[ty][tx] = sdyx;
    __syncthreads();
    if (ty == 0 && c < C) {
      for (int w = 1; w < kTy; ++w) sdy += sh_dy[w][tx], sdyx += sh_dyx[w][tx];
      const float inv_r = 1.f / float(R);
      sh_k1[tx] = sdy * inv_r, sh_k2[tx] = sdyx * inv_r;
      if (split % spg == 0) {
        if (grouped) {  // this group's own sums, its splits in order
          sdy = 0.f, sdyx = 0.f;
          for (int64_t j = split; j < split + spg; ++j)
            sdy += part_dy[j * C + c], sdyx += part_dyx[j * C + c];
        }
        if (dgamma) dgamma[gc] = (accumulate_dgamma ? dgamma[gc] : 0.f) + sdyx;
        if (dbeta) dbeta[gc] = (accumulate_dbeta ? dbeta[gc] : 0.f) + sdy;
      }
    }
    __syncthreads();
  }
  if (!dx || c >= C) return;
  const float m = mean[c], is = invstd[c];
  const float g = gamma ? gamma[gc] : 1.f, b = beta ? beta[gc] : 0.f;
  const float gi = g * is;
  const float k1 = training ? sh_k1[tx] : 0.f, k2 = training ? sh_k2[tx] : 0.f;
  int64_t begin, end;
  split_range(S, spg, chunk, split, begin, end);
#pragma unroll 4
  for (int64_t k = begin + ty; k < end; k += kTy) {
    const int64_t i = k * C + c;
    const float xhat = xhat_of(ld(x[i]), m, is);
    const float dyp = ld(dy[i]) * act_grad<kAct>(fmaf(g, xhat, b), slope);
    float v;
    if (!training)
      v = gi * dyp;
    else if (grouped)
      v = is * (g * dyp - fmaf(xhat, k2, k1));
    else
      v = gi * (dyp - fmaf(xhat, k2, k1));
    st(dx[i], v);
  }
}

void check_sizes(const char* fn, int64_t R, int64_t C, int64_t G) {
  GAN_CHECK(R >= 0 && C >= 0, std::string(fn) + ": negative size");
  GAN_CHECK((C + kTx - 1) / kTx < (int64_t(1) << 31), std::string(fn) + ": too many channels");
  GAN_CHECK(G >= 1 && R % G == 0 && G <= 65535,
            std::string(fn) + ": the groups must divide the rows (at most 65535 groups)");
}

float* workspace_part(void* workspace, const Plan& p, int64_t C, int which) {
  return static_cast<float*>(workspace) + size_t(which) * size_t(p.splits * C);
}

template <BnAct kAct, class TA>
void launch_forward_apply(bool training, const Plan& p, const TA* x, const float* gamma,
                          const float* beta, int64_t R, int64_t C, const float* part_mean,
                          const float* part_m2, float momentum, float eps, float slope,
                          const float* run_mean, const float* run_var, float* new_run_mean,
                          float* new_run_var, TA* y, float* save_mean, float* save_invstd,
                          cudaStream_t stream) {
  const dim3 grid(unsigned(p.tiles), unsigned(p.splits)), block(kTx, kTy);
  if (training)
    launch(bn_forward_apply_kernel<true, kAct, TA>, grid, block, 0, stream, x, gamma, beta, R, C,
           p.splits, p.S, p.spg, p.chunk, part_mean, part_m2, momentum, eps, slope, run_mean,
           run_var, new_run_mean, new_run_var, y, save_mean, save_invstd);
  else
    launch(bn_forward_apply_kernel<false, kAct, TA>, grid, block, 0, stream, x, gamma, beta, R, C,
           p.splits, p.S, p.spg, p.chunk, part_mean, part_m2, momentum, eps, slope, run_mean,
           run_var, new_run_mean, new_run_var, y, save_mean, save_invstd);
  GAN_CUDA_CHECK_LAUNCH();
}

template <class TA>
void forward_apply(BnAct act, bool training, const Plan& p, const TA* x, const float* gamma,
                   const float* beta, int64_t R, int64_t C, const float* part_mean,
                   const float* part_m2, float momentum, float eps, float slope,
                   const float* run_mean, const float* run_var, float* new_run_mean,
                   float* new_run_var, TA* y, float* save_mean, float* save_invstd,
                   cudaStream_t stream) {
  switch (act) {
    case BnAct::kNone:
      return launch_forward_apply<BnAct::kNone, TA>(
          training, p, x, gamma, beta, R, C, part_mean, part_m2, momentum, eps, slope, run_mean,
          run_var, new_run_mean, new_run_var, y, save_mean, save_invstd, stream);
    case BnAct::kRelu:
      return launch_forward_apply<BnAct::kRelu, TA>(
          training, p, x, gamma, beta, R, C, part_mean, part_m2, momentum, eps, slope, run_mean,
          run_var, new_run_mean, new_run_var, y, save_mean, save_invstd, stream);
    case BnAct::kLeakyRelu:
      return launch_forward_apply<BnAct::kLeakyRelu, TA>(
          training, p, x, gamma, beta, R, C, part_mean, part_m2, momentum, eps, slope, run_mean,
          run_var, new_run_mean, new_run_var, y, save_mean, save_invstd, stream);
  }
}

template <BnAct kAct, class TA>
void launch_backward(const Plan& p, bool reduce, const TA* x, const TA* dy, const float* gamma,
                     const float* beta, const float* mean, const float* invstd, int64_t R,
                     int64_t C, bool training, float slope, float* part_dy, float* part_dyx, TA* dx,
                     float* dgamma, float* dbeta, bool accumulate_dgamma, bool accumulate_dbeta,
                     cudaStream_t stream) {
  const dim3 block(kTx, kTy);
  if (reduce) {
    launch(bn_backward_reduce_kernel<kAct, TA>, dim3(unsigned(p.tiles), unsigned(p.splits)), block,
           0, stream, x, dy, gamma, beta, mean, invstd, C, p.S, p.spg, p.chunk, slope, part_dy,
           part_dyx);
    GAN_CUDA_CHECK_LAUNCH();
  }
  // Without dx only the first split of each group has work (dgamma, dbeta).
  const dim3 grid(unsigned(p.tiles), unsigned(dx ? p.splits : p.splits / p.spg));
  launch(bn_backward_apply_kernel<kAct, TA>, grid, block, 0, stream, x, dy, gamma, beta, mean,
         invstd, R, C, p.splits, p.S, p.spg, p.chunk, reduce ? part_dy : nullptr,
         reduce ? part_dyx : nullptr, training, slope, dx, dgamma, dbeta, accumulate_dgamma,
         accumulate_dbeta);
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t batch_norm_workspace_bytes(int64_t R, int64_t C, int64_t groups) {
  if (groups < 1 || R % groups != 0) return 0;  // refused by the launchers
  const Plan p = plan(R, C, groups);
  return 2 * size_t(p.splits) * size_t(C) * sizeof(float);
}

namespace {
template <class TA>
void forward_train(const TA* x, const float* gamma, const float* beta, int64_t R, int64_t C,
                   float momentum, float eps, BnAct act, float slope, float* running_mean,
                   float* running_var, TA* y, float* save_mean, float* save_invstd, void* workspace,
                   size_t workspace_bytes, cudaStream_t stream, int64_t G) {
  GAN_NVTX("batch_norm_forward_train");
  check_sizes("batch_norm_forward_train_cuda", R, C, G);
  GAN_CHECK(R > 1, "batch_norm_forward_train_cuda: training needs more than 1 row");
  if (C == 0) return;
  const Plan p = plan(R, C, G);
  GAN_CHECK(workspace && workspace_bytes >= batch_norm_workspace_bytes(R, C, G),
            "batch_norm_forward_train_cuda: workspace too small (ask batch_norm_workspace_bytes)");
  float* part_mean = workspace_part(workspace, p, C, 0);
  float* part_m2 = workspace_part(workspace, p, C, 1);
  launch(bn_stats_kernel<TA>, dim3(unsigned(p.tiles), unsigned(p.splits)), dim3(kTx, kTy), 0,
         stream, x, C, p.S, p.spg, p.chunk, part_mean, part_m2);
  GAN_CUDA_CHECK_LAUNCH();
  forward_apply(act, true, p, x, gamma, beta, R, C, part_mean, part_m2, momentum, eps, slope,
                running_mean, running_var, running_mean, running_var, y, save_mean, save_invstd,
                stream);
}

template <class TA>
void forward_eval(const TA* x, const float* gamma, const float* beta, int64_t R, int64_t C,
                  float eps, BnAct act, float slope, const float* running_mean,
                  const float* running_var, TA* y, float* save_mean, float* save_invstd,
                  cudaStream_t stream, int64_t G) {
  GAN_NVTX("batch_norm_forward_eval");
  check_sizes("batch_norm_forward_eval_cuda", R, C, G);
  if (C == 0) return;
  const Plan p = plan(R, C, G);
  forward_apply(act, false, p, x, gamma, beta, R, C, nullptr, nullptr, 0.f, eps, slope,
                running_mean, running_var, nullptr, nullptr, y, save_mean, save_invstd, stream);
}

template <class TA>
void backward(const TA* x, const TA* dy, const float* gamma, const float* beta, const float* mean,
              const float* invstd, int64_t R, int64_t C, bool training, BnAct act, float slope,
              TA* dx, float* dgamma, float* dbeta, bool accumulate_dgamma, bool accumulate_dbeta,
              void* workspace, size_t workspace_bytes, cudaStream_t stream, int64_t G) {
  GAN_NVTX("batch_norm_backward");
  check_sizes("batch_norm_backward_cuda", R, C, G);
  if (C == 0 || (!dx && !dgamma && !dbeta)) return;
  const Plan p = plan(R, C, G);
  // The sums are needed for dgamma/dbeta, and for dx in training; eval's dx is elementwise.
  const bool reduce = training || dgamma || dbeta;
  float *part_dy = nullptr, *part_dyx = nullptr;
  if (reduce) {
    GAN_CHECK(workspace && workspace_bytes >= batch_norm_workspace_bytes(R, C, G),
              "batch_norm_backward_cuda: workspace too small (ask batch_norm_workspace_bytes)");
    part_dy = workspace_part(workspace, p, C, 0);
    part_dyx = workspace_part(workspace, p, C, 1);
  }
  switch (act) {
    case BnAct::kNone:
      return launch_backward<BnAct::kNone, TA>(p, reduce, x, dy, gamma, beta, mean, invstd, R, C,
                                               training, slope, part_dy, part_dyx, dx, dgamma,
                                               dbeta, accumulate_dgamma, accumulate_dbeta, stream);
    case BnAct::kRelu:
      return launch_backward<BnAct::kRelu, TA>(p, reduce, x, dy, gamma, beta, mean, invstd, R, C,
                                               training, slope, part_dy, part_dyx, dx, dgamma,
                                               dbeta, accumulate_dgamma, accumulate_dbeta, stream);
    case BnAct::kLeakyRelu:
      return launch_backward<BnAct::kLeakyRelu, TA>(
          p, reduce, x, dy, gamma, beta, mean, invstd, R, C, training, slope, part_dy, part_dyx, dx,
          dgamma, dbeta, accumulate_dgamma, accumulate_dbeta, stream);
  }
}

}  // namespace

#define GAN_BN_PUBLIC(TA)                                                                          \
  void batch_norm_forward_train_cuda(                                                              \
      const TA* x, const float* gamma, const float* beta, int64_t R, int64_t C, float momentum,    \
      float eps, BnAct act, float slope, float* running_mean, float* running_var, TA* y,           \
      float* save_mean, float* save_invstd, void* workspace, size_t workspace_bytes,               \
      cudaStream_t stream, int64_t groups) {                                                       \
    forward_train(x, gamma, beta, R, C, momentum, eps, act, slope, running_mean, running_var, y,   \
                  save_mean, save_invstd, workspace, workspace_bytes, stream, groups);             \
  }                                                                                                \
  void batch_norm_forward_eval_cuda(                                                               \
      const TA* x, const float* gamma, const float* beta, int64_t R, int64_t C, float eps,         \
      BnAct act, float slope, const float* running_mean, const float* running_var, TA* y,          \
      float* save_mean, float* save_invstd, cudaStream_t stream, int64_t groups) {                 \
    forward_eval(x, gamma, beta, R, C, eps, act, slope, running_mean, running_var, y, save_mean,   \
                 save_invstd, stream, groups);                                                     \
  }                                                                                                \
  void batch_norm_backward_cuda(                                                                   \
      const TA* x, const TA* dy, const float* gamma, const float* beta, const float* mean,         \
      const float* invstd, int64_t R, int64_t C, bool training, BnAct act, float slope, TA* dx,    \
      float* dgamma, float* dbeta, bool accumulate_dgamma, bool accumulate_dbeta, void* workspace, \
      size_t workspace_bytes, cudaStream_t stream, int64_t groups) {                               \
    backward(x, dy, gamma, beta, mean, invstd, R, C, training, act, slope, dx, dgamma, dbeta,      \
             accumulate_dgamma, accumulate_dbeta, workspace, workspace_bytes, stream, groups);     \
  }
GAN_BN_PUBLIC(float)
GAN_BN_PUBLIC(uint16_t)
#undef GAN_BN_PUBLIC

}  // namespace gan::kernels
