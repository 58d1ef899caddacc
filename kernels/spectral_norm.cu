// Spectral normalisation of a group of weights, one launch per phase. Contract and layouts:
// kernels/spectral_norm.h; design, FLOPs, bytes and the floor: docs/kernels/spectral_norm.md.
#include <algorithm>
#include <string>

#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include "kernels/runtime.h"
#include "kernels/spectral_norm.h"

namespace gan::kernels {

namespace {

constexpr int kThreads = 256;  // every kernel: 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kUnitElems = 8192;     // target elements of a matrix per work unit
constexpr int kRowChunkMax = 1024;   // row dots: columns per unit at most
constexpr int kRowsPerWarpMax = 16;  // row dots: rows per warp at most
constexpr int kColRowsMax = 256;     // column dots: rows per unit at most (x 32 columns)
constexpr int kMaxLayers = kSpectralNormMaxLayers;
constexpr int kAlignFloats = 32;  // scratch regions start on 128-byte boundaries

enum : int { kPhaseV = 0, kPhaseU = 1, kPhaseF = 2 };

__host__ __device__ inline int ceil_div(int64_t a, int64_t b) { return int((a + b - 1) / b); }
inline int round_up(int64_t a, int64_t b) { return int((a + b - 1) / b * b); }

// ---------------------------------------------------------------------------------------------
// Kernel parameters: the layer tables travel by value as __grid_constant__ parameters (captured
// by value in a CUDA graph; no host buffer to keep alive). Both stay below the 4 KB limit of
// older drivers.

// One layer of the forward. The storage is A (m, n) (see the header); rows = transposed ? n : m.
// Row dots (y (m) = A x): units are (row tile of r_rows rows) x (column chunk of rc_w columns),
// rc_n chunks, the partial sums part[chunk * m + row]. Column dots (y (n) = A^T x): units are
// (tile of 32 columns) x (row chunk of cc_rows rows), cc_n chunks, part[chunk * n + column].
// Scratch (floats, from ws): s (cols) = W^T u, t (rows) = W v, scal[2] = {|s|^2, |t|^2 or u^T t},
// tsum (tiles) per-tile sums; the partial sums at ws + part. Counters (ints, from ctr): [0] the
// layer's finished tiles, [1 + tile] a tile's finished chunks; all return to zero.
struct FwdLayer {
  const float* w;
  float* w_sn;
  float* u;
  float* v;
  float* sigma;
  float* saved;  // or nullptr
  int m, n;
  int transposed;
  int r_rows, rc_w, rc_n;
  int cc_rows, cc_n;
  int unit0[3];  // first work unit of this layer in phases V, U, F
  int ws;        // float offset of the layer's scratch in the workspace
  int part;      // float offset of its partial sums, from ws
  int ctr;       // int offset of its counters
};

struct FwdParams {
  FwdLayer layers[kMaxLayers];
  float* ws;
  int* ctr;
  int nlayers;
  int training;
  int iterations;
  int step;      // the step this launch runs
  int units[3];  // work units of phases V, U, F over all layers
  float eps;
};
static_assert(sizeof(FwdParams) <= 4000, "spectral_norm: forward parameters exceed 4 KB");

// One layer of the backward: units are chunks of kUnitElems elements; scratch (floats, from ws):
// the chunks' partial sums of G W_sn (nunits), then c = <G, W_sn>; one counter at ctr.
struct BwdLayer {
  const float* g;
  const float* w_sn;
  const float* saved;
  float* dw;
  int m, n;
  int transposed;
  int accumulate;
  int nunits;
  int unit0;
  int ws;
  int ctr;
};

struct BwdParams {
  BwdLayer layers[kMaxLayers];
  float* ws;
  int* ctr;
  int nlayers;
  int units;
  int step;  // 0: B1, 1: B2
};
static_assert(sizeof(BwdParams) <= 4000, "spectral_norm: backward parameters exceed 4 KB");

// ---------------------------------------------------------------------------------------------
// Device components

using BlockSum = cub::BlockReduce<float, kThreads, cub::BLOCK_REDUCE_WARP_REDUCTIONS>;
using WarpSum = cub::WarpReduce<float>;

struct Smem {
  float x[kRowChunkMax];         // the unit's segment of the input vector
  float red[kWarps][33];         // column dots: per row-lane sums
  BlockSum::TempStorage reduce;  // block reductions
  int flag;                      // last_to_finish's verdict
};

__device__ __forceinline__ float warp_sum(float v) {
  WarpSum::TempStorage none;    // empty: the shuffle specialisation
  return WarpSum(none).Sum(v);  // lane 0: the sum, in a fixed order
}

constexpr int kAcc = 8;  // independent accumulators (loads in flight) per thread

// (a0 + a1) + (a2 + a3) + ... as a fixed tree.
__device__ __forceinline__ float tree8(const float (&a)[kAcc]) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// max(x, eps), NaN-propagating (the CPU reference's sn_clamp_min).
__device__ __forceinline__ float clamp_min(float x, float eps) { return x < eps ? eps : x; }
// 1 / max(sqrt(ss), eps).
__device__ __forceinline__ float inv_norm(float ss, float eps) {
  return __fdiv_rn(1.f, clamp_min(__fsqrt_rn(ss), eps));
}

// Sum of v over the block in a fixed order (cub::BlockReduce), valid in thread 0. sm.reduce is
// reusable on return.
__device__ float block_sum(float v, Smem& sm) {
  const float r = BlockSum(sm.reduce).Sum(v);
  __syncthreads();
  return r;
}

// Call from every thread after the block wrote its share of a result that `nparts` units produce.
// Returns true (in every thread) in the block that finished last, which may then read every
// share (with __ldcg). The counter is reset to zero by that block. An integer ticket: which block
// combines varies, the order in which it combines does not.
__device__ bool last_to_finish(int* counter, int nparts, Smem& sm) {
  __threadfence();  // this thread's writes are visible device-wide before the ticket is taken
  __syncthreads();
  if (nparts == 1) return true;
  if (threadIdx.x == 0) {
    const int prev = atomicAdd(counter, 1);
    const bool last = prev == nparts - 1;
    if (last) atomicExch(counter, 0);
    sm.flag = last ? 1 : 0;
  }
  __syncthreads();
  const bool last = sm.flag != 0;
  if (last) __threadfence();
  return last;
}

// One matrix-vector product of one layer in one phase: y = A x (row dots) or y = A^T x (column
// dots) with x_i = x[i] * xscale, then per-tile sums of stat_i = y_i^2 (or y_i ustat_i) and their
// layer total into *scal_out.
struct MatVec {
  const float* A;  // (m, n)
  int m, n;
  const float* x;  // row dots (n), column dots (m)
  float xscale;
  float* y;            // row dots (m), column dots (n)
  const float* ustat;  // (len y) or nullptr
  float* part;
  float* tsum;
  float* scal_out;
  int* ctr;
};

// The layer's total of the tile sums, by the block that finishes its last tile.
__device__ void finish_layer(const MatVec& mv, int ntiles, Smem& sm) {
  if (!last_to_finish(mv.ctr, ntiles, sm)) return;
  float v = 0.f;
  for (int i = threadIdx.x; i < ntiles; i += kThreads) v += __ldcg(mv.tsum + i);
  const float total = block_sum(v, sm);
  if (threadIdx.x == 0) *mv.scal_out = total;
}

// Row dots, unit (row tile rt, column chunk c): warp w takes rows p0 + w rpw + rw (rw < rpw), its
// lanes stride over the chunk's columns (contiguous, coalesced), eight accumulators, a shuffle
// tree; lane 0 writes part[c * m + p].
__device__ void row_dot_unit(const FwdLayer& L, const MatVec& mv, int k, Smem& sm) {
  const int rt = k / L.rc_n, c = k - rt * L.rc_n;
  const int c0 = c * L.rc_w, c1 = min(mv.n, c0 + L.rc_w);
  for (int q = c0 + int(threadIdx.x); q < c1; q += kThreads)
    sm.x[q - c0] = __ldcg(mv.x + q) * mv.xscale;
  __syncthreads();
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int rpw = L.r_rows / kWarps;
  const int p0 = rt * L.r_rows;
  for (int rw = 0; rw < rpw; ++rw) {
    const int p = p0 + warp * rpw + rw;
    if (p >= mv.m) break;                              // warp-uniform
    const float* row = mv.A + int64_t(p) * mv.n + c0;  // the chunk: columns [c0, c1)
    const int width = c1 - c0;
    float a[kAcc] = {};
    int q = lane;
    for (; q + 32 * (kAcc - 1) < width; q += 32 * kAcc) {
#pragma unroll
      for (int i = 0; i < kAcc; ++i) a[i] = fmaf(__ldg(row + q + 32 * i), sm.x[q + 32 * i], a[i]);
    }
    for (; q < width; q += 32) a[0] = fmaf(__ldg(row + q), sm.x[q], a[0]);
    const float acc = warp_sum(tree8(a));
    if (lane == 0) mv.part[int64_t(c) * mv.m + p] = acc;
  }
  if (last_to_finish(mv.ctr + 1 + rt, L.rc_n, sm)) {
    const int p1 = min(mv.m, p0 + L.r_rows);
    float stat = 0.f;
    if (int(threadIdx.x) < p1 - p0) {  // r_rows <= 128 < kThreads
      const int p = p0 + int(threadIdx.x);
      float y = 0.f;
      for (int cc = 0; cc < L.rc_n; ++cc) y += __ldcg(mv.part + int64_t(cc) * mv.m + p);
      mv.y[p] = y;
      stat = mv.ustat ? y * __ldcg(mv.ustat + p) : y * y;
    }
    const float tile = block_sum(stat, sm);
    if (threadIdx.x == 0) mv.tsum[rt] = tile;
    finish_layer(mv, ceil_div(mv.m, L.r_rows), sm);
  }
}

// Column dots, unit (32-column tile ct, row chunk r): thread (tx, ty) sums column ct 32 + tx over
// rows r0 + ty + 8 k (each warp reads 128 contiguous bytes of a row), eight accumulators; the 8
// row lanes are added in order in shared memory; part[r * n + j].
__device__ void col_dot_unit(const FwdLayer& L, const MatVec& mv, int k, Smem& sm) {
  const int ct = k / L.cc_n, r = k - ct * L.cc_n;
  const int r0 = r * L.cc_rows, r1 = min(mv.m, r0 + L.cc_rows);
  for (int i = int(threadIdx.x); i < r1 - r0; i += kThreads)
    sm.x[i] = __ldcg(mv.x + r0 + i) * mv.xscale;
  __syncthreads();
  const int tx = int(threadIdx.x) & 31, ty = int(threadIdx.x) >> 5;
  const int j = ct * 32 + tx;
  float a[kAcc] = {};
  if (j < mv.n) {
    const int64_t n = mv.n;
    const float* col = mv.A + r0 * n + j;  // the chunk: rows [r0, r1) of column j
    const int height = r1 - r0;
    int p = ty;
    for (; p + kWarps * (kAcc - 1) < height; p += kWarps * kAcc) {
#pragma unroll
      for (int i = 0; i < kAcc; ++i)
        a[i] = fmaf(__ldg(col + (p + kWarps * i) * n), sm.x[p + kWarps * i], a[i]);
    }
    for (; p < height; p += kWarps) a[0] = fmaf(__ldg(col + p * n), sm.x[p], a[0]);
  }
  sm.red[ty][tx] = tree8(a);
  __syncthreads();
  if (ty == 0 && j < mv.n) {
    float s = 0.f;
    for (int w = 0; w < kWarps; ++w) s += sm.red[w][tx];
    mv.part[int64_t(r) * mv.n + j] = s;
  }
  if (last_to_finish(mv.ctr + 1 + ct, L.cc_n, sm)) {
    float stat = 0.f;
    if (ty == 0 && j < mv.n) {
      float y = 0.f;
      for (int rr = 0; rr < L.cc_n; ++rr) y += __ldcg(mv.part + int64_t(rr) * mv.n + j);
      mv.y[j] = y;
      stat = mv.ustat ? y * __ldcg(mv.ustat + j) : y * y;
    }
    const float tile = block_sum(stat, sm);
    if (threadIdx.x == 0) mv.tsum[ct] = tile;
    finish_layer(mv, ceil_div(mv.n, 32), sm);
  }
}

// The layer whose units [unit0, next unit0) of `phase` contain unit k.
__device__ int find_layer(const FwdParams& p, int k, int phase) {
  int l = 0;
  while (l + 1 < p.nlayers && k >= p.layers[l + 1].unit0[phase]) ++l;
  return l;
}
__device__ int find_bwd_layer(const BwdParams& p, int k) {
  int l = 0;
  while (l + 1 < p.nlayers && k >= p.layers[l + 1].unit0) ++l;
  return l;
}

// Phase V (s = W^T u) or U (t = W v) of power iteration `it`, all layers: block k does unit k.
__device__ void phase_matvec(const FwdParams& p, int phase, int it, Smem& sm) {
  if (const int k = int(blockIdx.x); k < p.units[phase]) {
    const FwdLayer& L = p.layers[find_layer(p, k, phase)];
    const int rows = L.transposed ? L.n : L.m, cols = L.transposed ? L.m : L.n;
    float* s = p.ws + L.ws;  // (cols)
    float* t = s + cols;     // (rows)
    float* scal = t + rows;  // (2)
    MatVec mv;
    mv.A = L.w;
    mv.m = L.m;
    mv.n = L.n;
    mv.part = p.ws + L.ws + L.part;
    mv.tsum = scal + 2;
    mv.ctr = p.ctr + L.ctr;
    bool row_dots;
    if (phase == kPhaseV) {  // s = W^T u: u the stored one, then the previous t / max(|t|, eps)
      row_dots = L.transposed != 0;
      mv.x = it == 0 ? L.u : t;
      mv.xscale = it == 0 ? 1.f : inv_norm(__ldcg(scal + 1), p.eps);
      mv.y = s;
      mv.ustat = nullptr;
      mv.scal_out = scal;
    } else {  // t = W v: v = s / max(|s|, eps) in training, the stored one in eval
      row_dots = L.transposed == 0;
      mv.x = p.training ? s : L.v;
      mv.xscale = p.training ? inv_norm(__ldcg(scal), p.eps) : 1.f;
      mv.y = t;
      mv.ustat = p.training ? nullptr : L.u;
      mv.scal_out = scal + 1;
    }
    if (row_dots)
      row_dot_unit(L, mv, k - L.unit0[phase], sm);
    else
      col_dot_unit(L, mv, k - L.unit0[phase], sm);
  }
}

// Phase F: W_sn = W / sigma (units of kUnitElems elements), and one unit per layer writing u, v,
// sigma (persistent and saved).
__device__ void phase_finish(const FwdParams& p) {
  if (const int k = int(blockIdx.x); k < p.units[kPhaseF]) {
    const FwdLayer& L = p.layers[find_layer(p, k, kPhaseF)];
    const int rows = L.transposed ? L.n : L.m, cols = L.transposed ? L.m : L.n;
    const float* s = p.ws + L.ws;
    const float* t = s + cols;
    const float* scal = t + rows;
    const float st = __ldcg(scal + 1);
    const float inv_t = p.training ? inv_norm(st, p.eps) : 1.f;
    const float sigma = p.training ? st * inv_t : st;  // u^T t = |t|^2 / max(|t|, eps)
    const int64_t numel = int64_t(L.m) * L.n;
    const int local = k - L.unit0[kPhaseF];
    if (local < ceil_div(numel, kUnitElems)) {
      const int64_t e0 = int64_t(local) * kUnitElems, e1 = min(numel, e0 + kUnitElems);
      for (int64_t base = e0 + threadIdx.x; base < e1; base += kAcc * kThreads) {
        float x[kAcc];  // all loads first: the stores may not be assumed apart from the loads
#pragma unroll
        for (int i = 0; i < kAcc; ++i) {
          const int64_t e = base + i * kThreads;
          x[i] = e < e1 ? __ldg(L.w + e) : 0.f;
        }
#pragma unroll
        for (int i = 0; i < kAcc; ++i) {
          const int64_t e = base + i * kThreads;
          if (e < e1) L.w_sn[e] = __fdiv_rn(x[i], sigma);
        }
      }
      return;
    }
    if (p.training) {
      const float inv_s = inv_norm(__ldcg(scal), p.eps);
      for (int i = int(threadIdx.x); i < rows; i += kThreads) {
        const float ui = __ldcg(t + i) * inv_t;
        L.u[i] = ui;
        if (L.saved) L.saved[i] = ui;
      }
      for (int j = int(threadIdx.x); j < cols; j += kThreads) {
        const float vj = __ldcg(s + j) * inv_s;
        L.v[j] = vj;
        if (L.saved) L.saved[rows + j] = vj;
      }
    } else if (L.saved) {
      for (int i = int(threadIdx.x); i < rows; i += kThreads) L.saved[i] = __ldcg(L.u + i);
      for (int j = int(threadIdx.x); j < cols; j += kThreads) L.saved[rows + j] = __ldcg(L.v + j);
    }
    if (threadIdx.x == 0) {
      *L.sigma = sigma;
      if (L.saved) L.saved[rows + cols] = sigma;
    }
  }
}

// Steps: training V0 U0 V1 U1 ... F (2 iterations + 1), eval U F; one launch per step, stream
// order between them.
__global__ void __launch_bounds__(kThreads) sn_forward_kernel(const __grid_constant__ FwdParams p) {
  __shared__ Smem sm;
  const int step = p.step;
  int phase = kPhaseF, it = 0;
  if (p.training && step < 2 * p.iterations) {
    phase = step % 2 == 0 ? kPhaseV : kPhaseU;
    it = step / 2;
  } else if (!p.training && step == 0) {
    phase = kPhaseU;
  }
  if (phase == kPhaseF)
    phase_finish(p);
  else
    phase_matvec(p, phase, it, sm);
}

// Backward steps: B1 (step 0) c = <G, W_sn> per layer; B2 (step 1) dW. One launch per step,
// block k does unit k.
__global__ void __launch_bounds__(kThreads)
    sn_backward_kernel(const __grid_constant__ BwdParams p) {
  __shared__ Smem sm;
  const int k = int(blockIdx.x);
  if (k >= p.units) return;
  const BwdLayer& L = p.layers[find_bwd_layer(p, k)];
  const int local = k - L.unit0;
  const int64_t numel = int64_t(L.m) * L.n;
  const int64_t e0 = int64_t(local) * kUnitElems, e1 = min(numel, e0 + kUnitElems);
  float* part = p.ws + L.ws;  // (nunits + 1)
  if (p.step == 0) {
    float a[kAcc] = {};
    int64_t e = e0 + threadIdx.x;
    for (; e + (kAcc - 1) * kThreads < e1; e += kAcc * kThreads) {
#pragma unroll
      for (int i = 0; i < kAcc; ++i)
        a[i] = fmaf(__ldg(L.g + e + i * kThreads), __ldg(L.w_sn + e + i * kThreads), a[i]);
    }
    for (; e < e1; e += kThreads) a[0] = fmaf(__ldg(L.g + e), __ldg(L.w_sn + e), a[0]);
    const float total = block_sum(tree8(a), sm);
    if (threadIdx.x == 0) part[local] = total;
    if (last_to_finish(p.ctr + L.ctr, L.nunits, sm)) {
      float v = 0.f;
      for (int i = int(threadIdx.x); i < L.nunits; i += kThreads) v += __ldcg(part + i);
      const float c = block_sum(v, sm);
      if (threadIdx.x == 0) part[L.nunits] = c;
    }
    return;
  }
  const float c = __ldcg(part + L.nunits);
  const int rows = L.transposed ? L.n : L.m;
  const int cols = L.transposed ? L.m : L.n;
  const float sigma = __ldg(L.saved + rows + cols);
  const float* a = L.transposed ? L.saved + rows : L.saved;  // (m): u, or v if transposed
  const float* b = L.transposed ? L.saved : L.saved + rows;  // (n): v, or u if transposed
  const unsigned n = unsigned(L.n);
  for (int64_t base = e0 + threadIdx.x; base < e1; base += kAcc * kThreads) {
    float val[kAcc], prev[kAcc];  // all loads first, then the stores
#pragma unroll
    for (int i = 0; i < kAcc; ++i) {
      const int64_t e = base + i * kThreads;
      val[i] = 0.f, prev[i] = 0.f;
      if (e < e1) {
        const unsigned eu = unsigned(e), pr = eu / n, q = eu - pr * n;
        val[i] = __ldg(L.g + e) - c * __ldg(a + pr) * __ldg(b + q);
        if (L.accumulate) prev[i] = L.dw[e];
      }
    }
#pragma unroll
    for (int i = 0; i < kAcc; ++i) {
      const int64_t e = base + i * kThreads;
      if (e < e1) {
        const float d = __fdiv_rn(val[i], sigma);
        L.dw[e] = L.accumulate ? prev[i] + d : d;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: plans, workspace layout, launches

struct FwdPlan {
  std::vector<FwdLayer> layers;  // every layer of the call; unit0 filled per launch
  std::vector<int> units;        // units of phases V, U, F per layer (3 per layer)
  size_t ctr_ints = 0;
  size_t ws_floats = 0;
  size_t bytes = 0;
  size_t ctr_bytes = 0;  // the counters come first in the workspace
};

void check_dims(const char* op, size_t i, int64_t rows, int64_t cols) {
  GAN_CHECK(rows >= 1 && cols >= 1 && rows * cols < (int64_t(1) << 31),
            std::string(op) + ": layer " + std::to_string(i) + " is a (" + std::to_string(rows) +
                ", " + std::to_string(cols) +
                ") matrix; need 1 <= rows, cols and rows * cols < 2^31");
}

FwdPlan plan_forward(const std::vector<SpectralNormForwardLayer>& in) {
  FwdPlan plan;
  int64_t ws = 0, ctr = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const SpectralNormForwardLayer& a = in[i];
    check_dims("spectral_norm_forward_cuda", i, a.rows, a.cols);
    FwdLayer L{};
    L.w = a.w, L.w_sn = a.w_sn, L.u = a.u, L.v = a.v, L.sigma = a.sigma, L.saved = a.saved;
    L.transposed = a.transposed ? 1 : 0;
    L.m = int(a.transposed ? a.cols : a.rows);
    L.n = int(a.transposed ? a.rows : a.cols);
    // Row dots: columns split into <= kRowChunkMax-wide chunks (multiples of 32), rows per warp
    // chosen so that a unit holds about kUnitElems elements.
    L.rc_n = ceil_div(L.n, kRowChunkMax);
    L.rc_w = round_up(ceil_div(L.n, L.rc_n), 32);
    L.rc_n = ceil_div(L.n, L.rc_w);
    const int rpw = std::clamp(kUnitElems / (kWarps * std::min(L.n, L.rc_w)), 1, kRowsPerWarpMax);
    L.r_rows = kWarps * rpw;
    // Column dots: rows split into <= kColRowsMax-row chunks (multiples of 8).
    L.cc_n = ceil_div(L.m, kColRowsMax);
    L.cc_rows = round_up(ceil_div(L.m, L.cc_n), kWarps);
    L.cc_n = ceil_div(L.m, L.cc_rows);
    const int row_tiles = ceil_div(L.m, L.r_rows), col_tiles = ceil_div(L.n, 32);
    const int row_units = row_tiles * L.rc_n, col_units = col_tiles * L.cc_n;
    const int64_t row_part = int64_t(L.rc_n) * L.m, col_part = int64_t(L.cc_n) * L.n;
    const int tiles = std::max(row_tiles, col_tiles);
    const int64_t rows = a.rows, cols = a.cols;
    L.ws = int(ws);
    L.part = round_up(cols + rows + 2 + tiles, kAlignFloats);
    ws += round_up(L.part + std::max(row_part, col_part), kAlignFloats);
    L.ctr = int(ctr);
    ctr += 1 + tiles;
    GAN_CHECK(ws < (int64_t(1) << 31) && ctr < (int64_t(1) << 31),
              "spectral_norm_forward_cuda: workspace too large");
    plan.layers.push_back(L);
    plan.units.push_back(L.transposed ? row_units : col_units);          // V: W^T u
    plan.units.push_back(L.transposed ? col_units : row_units);          // U: W v
    plan.units.push_back(ceil_div(int64_t(L.m) * L.n, kUnitElems) + 1);  // F
  }
  plan.ctr_ints = size_t(ctr);
  plan.ws_floats = size_t(ws);
  plan.ctr_bytes = size_t(round_up(int64_t(ctr) * 4, 256));
  plan.bytes = plan.ctr_bytes + plan.ws_floats * sizeof(float);
  return plan;
}

struct BwdPlan {
  std::vector<BwdLayer> layers;
  size_t ctr_ints = 0, ws_floats = 0, ctr_bytes = 0, bytes = 0;
};

BwdPlan plan_backward(const std::vector<SpectralNormBackwardLayer>& in) {
  BwdPlan plan;
  int64_t ws = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const SpectralNormBackwardLayer& a = in[i];
    check_dims("spectral_norm_backward_cuda", i, a.rows, a.cols);
    BwdLayer L{};
    L.g = a.g, L.w_sn = a.w_sn, L.saved = a.saved, L.dw = a.dw;
    L.transposed = a.transposed ? 1 : 0;
    L.accumulate = a.accumulate ? 1 : 0;
    L.m = int(a.transposed ? a.cols : a.rows);
    L.n = int(a.transposed ? a.rows : a.cols);
    L.nunits = ceil_div(int64_t(L.m) * L.n, kUnitElems);
    L.ws = int(ws);
    ws += round_up(L.nunits + 1, kAlignFloats);
    L.ctr = int(i);
    GAN_CHECK(ws < (int64_t(1) << 31), "spectral_norm_backward_cuda: workspace too large");
    plan.layers.push_back(L);
  }
  plan.ctr_ints = in.size();
  plan.ws_floats = size_t(ws);
  plan.ctr_bytes = size_t(round_up(int64_t(plan.ctr_ints) * 4, 256));
  plan.bytes = plan.ctr_bytes + plan.ws_floats * sizeof(float);
  return plan;
}

// Runs steps [0, nsteps) of `kernel`, one ordinary launch per step (one block per work unit).
template <class Params>
void launch_steps(void (*kernel)(const Params), Params& prm, const std::vector<int>& step_units,
                  cudaStream_t stream) {
  for (size_t s = 0; s < step_units.size(); ++s) {
    prm.step = int(s);
    launch(kernel, unsigned(std::max(1, step_units[s])), kThreads, 0, stream, prm);
    GAN_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

size_t spectral_norm_forward_workspace_bytes(const std::vector<SpectralNormForwardLayer>& layers) {
  return layers.empty() ? 0 : plan_forward(layers).bytes;
}

void spectral_norm_forward_cuda(const std::vector<SpectralNormForwardLayer>& layers, bool training,
                                int iterations, float eps, void* workspace, size_t workspace_bytes,
                                cudaStream_t stream) {
  GAN_NVTX("spectral_norm_forward");
  if (layers.empty()) return;
  GAN_CHECK(!training || iterations >= 1,
            "spectral_norm_forward_cuda: iterations must be >= 1 in training, got " +
                std::to_string(iterations));
  for (const auto& l : layers)
    GAN_CHECK(l.w && l.w_sn && l.u && l.v && l.sigma,
              "spectral_norm_forward_cuda: null weight, output, u, v or sigma pointer");
  const FwdPlan plan = plan_forward(layers);
  GAN_CHECK(workspace && workspace_bytes >= plan.bytes,
            "spectral_norm_forward_cuda: workspace too small (ask "
            "spectral_norm_forward_workspace_bytes)");
  auto* base = static_cast<unsigned char*>(workspace);
  GAN_CUDA_CHECK(cudaMemsetAsync(base, 0, plan.ctr_bytes, stream));
  const int nsteps = training ? 2 * iterations + 1 : 2;
  for (size_t first = 0; first < layers.size(); first += kMaxLayers) {
    const size_t count = std::min(layers.size() - first, size_t(kMaxLayers));
    FwdParams prm{};
    prm.ws = reinterpret_cast<float*>(base + plan.ctr_bytes);
    prm.ctr = reinterpret_cast<int*>(base);
    prm.nlayers = int(count);
    prm.training = training ? 1 : 0;
    prm.iterations = training ? iterations : 0;
    prm.eps = eps;
    int64_t units[3] = {0, 0, 0};
    for (size_t i = 0; i < count; ++i) {
      FwdLayer L = plan.layers[first + i];
      for (int ph = 0; ph < 3; ++ph) {
        L.unit0[ph] = int(units[ph]);
        units[ph] += plan.units[3 * (first + i) + size_t(ph)];
      }
      prm.layers[i] = L;
    }
    GAN_CHECK(units[0] < (int64_t(1) << 31) && units[1] < (int64_t(1) << 31) &&
                  units[2] < (int64_t(1) << 31),
              "spectral_norm_forward_cuda: too many work units");
    for (int ph = 0; ph < 3; ++ph) prm.units[ph] = int(units[ph]);
    std::vector<int> step_units;
    for (int s = 0; s < nsteps; ++s) {
      int ph = kPhaseF;
      if (training && s < 2 * iterations) ph = s % 2 == 0 ? kPhaseV : kPhaseU;
      if (!training && s == 0) ph = kPhaseU;
      step_units.push_back(prm.units[ph]);
    }
    launch_steps(sn_forward_kernel, prm, step_units, stream);
  }
}

size_t spectral_norm_backward_workspace_bytes(
    const std::vector<SpectralNormBackwardLayer>& layers) {
  return layers.empty() ? 0 : plan_backward(layers).bytes;
}

void spectral_norm_backward_cuda(const std::vector<SpectralNormBackwardLayer>& layers,
                                 void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  GAN_NVTX("spectral_norm_backward");
  if (layers.empty()) return;
  for (const auto& l : layers)
    GAN_CHECK(l.g && l.w_sn && l.saved && l.dw,
              "spectral_norm_backward_cuda: null gradient, output, saved or dw pointer");
  const BwdPlan plan = plan_backward(layers);
  GAN_CHECK(workspace && workspace_bytes >= plan.bytes,
            "spectral_norm_backward_cuda: workspace too small (ask "
            "spectral_norm_backward_workspace_bytes)");
  auto* base = static_cast<unsigned char*>(workspace);
  GAN_CUDA_CHECK(cudaMemsetAsync(base, 0, plan.ctr_bytes, stream));
  for (size_t first = 0; first < layers.size(); first += kMaxLayers) {
    const size_t count = std::min(layers.size() - first, size_t(kMaxLayers));
    BwdParams prm{};
    prm.ws = reinterpret_cast<float*>(base + plan.ctr_bytes);
    prm.ctr = reinterpret_cast<int*>(base);
    prm.nlayers = int(count);
    int64_t units = 0;
    for (size_t i = 0; i < count; ++i) {
      BwdLayer L = plan.layers[first + i];
      L.unit0 = int(units);
      units += L.nunits;
      prm.layers[i] = L;
    }
    GAN_CHECK(units < (int64_t(1) << 31), "spectral_norm_backward_cuda: too many work units");
    prm.units = int(units);
    launch_steps(sn_backward_kernel, prm, {prm.units, prm.units}, stream);
  }
}

}  // namespace gan::kernels
