// Flash-style attention kernels, version 1 (SIMT float32; docs/kernels/attention.md).
//
// Tiles: 32 queries x 32 keys per step, 256 threads as 16 x 16 (ty, tx); a thread owns rows
// {ty, ty + 16} and, of a 32-wide tile, columns {tx, tx + 16}, of a 64-wide value chunk columns
// {tx + 16 j}. The value dimension is cut into NCH chunks of 64 columns that every thread of the
// block carries (registers), so the exponentials of a tile are computed once per block whatever
// dv is. Forward keeps running max and sum per query row (online softmax) and saves
// lse = max + log(sum). Backward recomputes P from lse in two kernels: one owns 32 keys and walks
// the queries (dK, dV accumulate in registers), the other owns 32 queries and walks the keys (dQ),
// so nothing is accumulated across blocks (deterministic, no atomics).
#include <algorithm>

#include <cub/warp/warp_reduce.cuh>
#include "kernels/attention.h"

#include "kernels/block_reduce.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kT = 32;         // queries and keys per tile
constexpr int kThreads = 256;  // 16 x 16
constexpr int kChunk = 64;     // value columns per chunk
constexpr int kPad = 65;  // smem row stride for d <= 64 and 64-column chunks (no bank conflicts)

__device__ __forceinline__ float group16_max(float v) {
  for (int off = 8; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

__device__ __forceinline__ float group16_sum(float v) {
  for (int off = 8; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Loads a 32 x (up to 64) tile: dst[r][c] = src[(row0 + r) * ld + col0 + c] * mul, zero outside
// rows < rows_valid and c < cols_valid.
__device__ __forceinline__ void load_tile(float (*dst)[kPad], const float* __restrict__ src,
                                          int64_t row0, int64_t rows_valid, int64_t ld,
                                          int64_t col0, int64_t cols_valid, float mul) {
  for (int e = threadIdx.x; e < kT * 64; e += kThreads) {
    const int r = e >> 6, c = e & 63;
    float val = 0.f;
    if (r < rows_valid && c < cols_valid) val = src[(row0 + r) * ld + col0 + c] * mul;
    dst[r][c] = val;
  }
}

// grid (ceil(Nq / 32), B). o, lse always written; y = gamma o + x when y != nullptr.
template <int NCH>
__global__ void __launch_bounds__(kThreads)
    attn_forward_kernel(AttnDims a, const float* __restrict__ q, const float* __restrict__ k,
                        const float* __restrict__ v, float* __restrict__ o, float* __restrict__ lse,
                        const float* __restrict__ gamma, const float* __restrict__ x,
                        float* __restrict__ y) {
  __shared__ float Qs[kT][kPad], Ks[kT][kPad], Vs[kT][kPad], Ps[kT][kT + 1];
  const int64_t b = blockIdx.y, q0 = int64_t(blockIdx.x) * kT;
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  load_tile(Qs, q, b * a.nq + q0, a.nq - q0, a.ldq, 0, a.d, 1.f);

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float acc[NCH][2][4];
#pragma unroll
  for (int ch = 0; ch < NCH; ++ch)
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[ch][i][j] = 0.f;

  for (int64_t k0 = 0; k0 < a.nk; k0 += kT) {
    const int64_t kn = min(int64_t(kT), a.nk - k0);
    __syncthreads();  // the previous tile's reads of Ks, Ps, Vs are done
    load_tile(Ks, k, b * a.nk + k0, kn, a.ldk, 0, a.d, 1.f);
    __syncthreads();
    float s[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        float acc_s = 0.f;
        for (int c = 0; c < a.d; ++c) acc_s += Qs[ty + 16 * i][c] * Ks[tx + 16 * j][c];
        s[i][j] = (tx + 16 * j < kn) ? acc_s : -INFINITY;
      }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float mt = group16_max(fmaxf(s[i][0], s[i][1]));
      const float mnew = fmaxf(m[i], mt);
      const float corr = expf(m[i] - mnew);
      const float p0 = expf(s[i][0] - mnew), p1 = expf(s[i][1] - mnew);
      l[i] = l[i] * corr + group16_sum(p0 + p1);
      m[i] = mnew;
#pragma unroll
      for (int ch = 0; ch < NCH; ++ch)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[ch][i][j] *= corr;
      Ps[ty + 16 * i][tx] = p0;
      Ps[ty + 16 * i][tx + 16] = p1;
    }
#pragma unroll
    for (int ch = 0; ch < NCH; ++ch) {
      if (ch * kChunk >= a.dv) break;
      __syncthreads();  // Ps written; the previous chunk's reads of Vs are done
      load_tile(Vs, v, b * a.nk + k0, kn, a.ldv, ch * kChunk, a.dv - ch * kChunk, 1.f);
      __syncthreads();
      for (int kk = 0; kk < kn; ++kk) {
        const float p0 = Ps[ty][kk], p1 = Ps[ty + 16][kk];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float vv = Vs[kk][tx + 16 * j];
          acc[ch][0][j] += p0 * vv;
          acc[ch][1][j] += p1 * vv;
        }
      }
    }
  }

  const float g = gamma ? *gamma : 0.f;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t qi = q0 + ty + 16 * i;
    if (qi >= a.nq) continue;
    const float inv = 1.f / l[i];
    const int64_t row = (b * a.nq + qi) * a.ldo;
#pragma unroll
    for (int ch = 0; ch < NCH; ++ch)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t col = ch * kChunk + tx + 16 * j;
        if (col >= a.dv) continue;
        const float ov = acc[ch][i][j] * inv;
        o[row + col] = ov;
        if (y) y[row + col] = g * ov + x[row + col];
      }
    if (tx == 0) lse[b * a.nq + qi] = m[i] + logf(l[i]);
  }
}

// drow[r] = dy[r] . o[r] for every row r of (B * Nq): one warp per row.
__global__ void attn_row_dot_kernel(int64_t rows, int64_t dv, int64_t ld,
                                    const float* __restrict__ dy, const float* __restrict__ o,
                                    float* __restrict__ drow) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; r < rows;
       r += (int64_t(gridDim.x) * blockDim.x) >> 5) {
    float s = 0.f;
    for (int64_t c = lane; c < dv; c += 32) s += dy[r * ld + c] * o[r * ld + c];
    cub::WarpReduce<float>::TempStorage none;  // empty: the shuffle specialisation
    s = cub::WarpReduce<float>(none).Sum(s);   // lane 0
    if (lane == 0) drow[r] = s;
  }
}

// grid (ceil(Nk / 32), B): dK and dV of 32 keys, walking every query tile.
template <int NCH>
__global__ void __launch_bounds__(kThreads)
    attn_dkdv_kernel(AttnDims a, const float* __restrict__ q, const float* __restrict__ k,
                     const float* __restrict__ v, const float* __restrict__ lse,
                     const float* __restrict__ dy, const float* __restrict__ scale,
                     const float* __restrict__ drow, float* __restrict__ dk,
                     float* __restrict__ dv) {
  __shared__ float Ks[kT][kPad], Qs[kT][kPad], Os[kT][kPad], Vs[kT][kPad];
  __shared__ float Ps[kT][kT + 1], Ss[kT][kT + 1];
  __shared__ float lse_s[kT], D_s[kT];
  const int64_t b = blockIdx.y, k0 = int64_t(blockIdx.x) * kT;
  const int64_t kn = min(int64_t(kT), a.nk - k0);
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const float g = scale ? *scale : 1.f;
  load_tile(Ks, k, b * a.nk + k0, kn, a.ldk, 0, a.d, 1.f);
  // With one chunk the block's V rows stay in shared memory for every query tile.
  if constexpr (NCH == 1) load_tile(Vs, v, b * a.nk + k0, kn, a.ldv, 0, a.dv, 1.f);

  float dva[NCH][2][4], dka[2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      dka[i][j] = 0.f;
#pragma unroll
      for (int ch = 0; ch < NCH; ++ch) dva[ch][i][j] = 0.f;
    }

  for (int64_t q0 = 0; q0 < a.nq; q0 += kT) {
    const int64_t qn = min(int64_t(kT), a.nq - q0);
    __syncthreads();  // the previous tile's reads are done
    load_tile(Qs, q, b * a.nq + q0, qn, a.ldq, 0, a.d, 1.f);
    if (threadIdx.x < kT) {
      const bool ok = threadIdx.x < qn;
      lse_s[threadIdx.x] = ok ? lse[b * a.nq + q0 + threadIdx.x] : 0.f;
      D_s[threadIdx.x] = ok ? g * drow[b * a.nq + q0 + threadIdx.x] : 0.f;
    }
    __syncthreads();
    // P[qr][kc] for queries {ty, ty+16} and keys {tx, tx+16}.
    float p[2][2], dp[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int qr = ty + 16 * i, kc = tx + 16 * j;
        float s = 0.f;
        for (int c = 0; c < a.d; ++c) s += Qs[qr][c] * Ks[kc][c];
        p[i][j] = (qr < qn && kc < kn) ? expf(s - lse_s[qr]) : 0.f;
        Ps[qr][kc] = p[i][j];
        dp[i][j] = 0.f;
      }
#pragma unroll
    for (int ch = 0; ch < NCH; ++ch) {
      if (ch * kChunk >= a.dv) break;
      __syncthreads();  // Ps visible; the previous chunk's reads are done
      load_tile(Os, dy, b * a.nq + q0, qn, a.ldo, ch * kChunk, a.dv - ch * kChunk, g);
      if constexpr (NCH > 1)
        load_tile(Vs, v, b * a.nk + k0, kn, a.ldv, ch * kChunk, a.dv - ch * kChunk, 1.f);
      __syncthreads();
      // dP[q][k] += dO[q] . V[k] over this chunk
      for (int c = 0; c < kChunk; ++c) {
        const float o0 = Os[ty][c], o1 = Os[ty + 16][c];
        const float v0 = Vs[tx][c], v1 = Vs[tx + 16][c];
        dp[0][0] += o0 * v0;
        dp[0][1] += o0 * v1;
        dp[1][0] += o1 * v0;
        dp[1][1] += o1 * v1;
      }
      // dV[k][col] += sum_q P[q][k] dO[q][col], keys {ty, ty+16}
      for (int qq = 0; qq < qn; ++qq) {
        const float pk0 = Ps[qq][ty], pk1 = Ps[qq][ty + 16];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float ov = Os[qq][tx + 16 * j];
          dva[ch][0][j] += pk0 * ov;
          dva[ch][1][j] += pk1 * ov;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int qr = ty + 16 * i, kc = tx + 16 * j;
        Ss[qr][kc] = p[i][j] * (dp[i][j] - D_s[qr]);
      }
    __syncthreads();
    // dK[k][c] += sum_q dS[q][k] Q[q][c], keys {ty, ty+16}, c {tx + 16 j}
    for (int qq = 0; qq < qn; ++qq) {
      const float s0 = Ss[qq][ty], s1 = Ss[qq][ty + 16];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float qv = Qs[qq][tx + 16 * j];
        dka[0][j] += s0 * qv;
        dka[1][j] += s1 * qv;
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t kj = k0 + ty + 16 * i;
    if (kj >= a.nk) continue;
    const int64_t r = b * a.nk + kj;
    if (dk)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = tx + 16 * j;
        if (c < a.d) dk[r * a.ldk + c] = dka[i][j];
      }
    if (dv)
#pragma unroll
      for (int ch = 0; ch < NCH; ++ch)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int64_t col = ch * kChunk + tx + 16 * j;
          if (col < a.dv) dv[r * a.ldv + col] = dva[ch][i][j];
        }
  }
}

// grid (ceil(Nq / 32), B): dQ of 32 queries, walking every key tile.
template <int NCH>
__global__ void __launch_bounds__(kThreads)
    attn_dq_kernel(AttnDims a, const float* __restrict__ q, const float* __restrict__ k,
                   const float* __restrict__ v, const float* __restrict__ lse,
                   const float* __restrict__ dy, const float* __restrict__ scale,
                   const float* __restrict__ drow, float* __restrict__ dq) {
  __shared__ float Qs[kT][kPad], Ks[kT][kPad], Os[kT][kPad], Vs[kT][kPad];
  __shared__ float Ss[kT][kT + 1];
  __shared__ float lse_s[kT], D_s[kT];
  const int64_t b = blockIdx.y, q0 = int64_t(blockIdx.x) * kT;
  const int64_t qn = min(int64_t(kT), a.nq - q0);
  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const float g = scale ? *scale : 1.f;
  load_tile(Qs, q, b * a.nq + q0, qn, a.ldq, 0, a.d, 1.f);
  if (threadIdx.x < kT) {
    const bool ok = threadIdx.x < qn;
    lse_s[threadIdx.x] = ok ? lse[b * a.nq + q0 + threadIdx.x] : 0.f;
    D_s[threadIdx.x] = ok ? g * drow[b * a.nq + q0 + threadIdx.x] : 0.f;
  }
  // With one chunk the block's dO rows stay in shared memory for every key tile.
  if constexpr (NCH == 1) load_tile(Os, dy, b * a.nq + q0, qn, a.ldo, 0, a.dv, g);

  float dqa[2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) dqa[i][j] = 0.f;

  for (int64_t k0 = 0; k0 < a.nk; k0 += kT) {
    const int64_t kn = min(int64_t(kT), a.nk - k0);
    __syncthreads();
    load_tile(Ks, k, b * a.nk + k0, kn, a.ldk, 0, a.d, 1.f);
    __syncthreads();
    float p[2][2], dp[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int qr = ty + 16 * i, kc = tx + 16 * j;
        float s = 0.f;
        for (int c = 0; c < a.d; ++c) s += Qs[qr][c] * Ks[kc][c];
        p[i][j] = (qr < qn && kc < kn) ? expf(s - lse_s[qr]) : 0.f;
        dp[i][j] = 0.f;
      }
#pragma unroll
    for (int ch = 0; ch < NCH; ++ch) {
      if (ch * kChunk >= a.dv) break;
      __syncthreads();  // the previous chunk's reads are done
      if constexpr (NCH > 1)
        load_tile(Os, dy, b * a.nq + q0, qn, a.ldo, ch * kChunk, a.dv - ch * kChunk, g);
      load_tile(Vs, v, b * a.nk + k0, kn, a.ldv, ch * kChunk, a.dv - ch * kChunk, 1.f);
      __syncthreads();
      for (int c = 0; c < kChunk; ++c) {
        const float o0 = Os[ty][c], o1 = Os[ty + 16][c];
        const float v0 = Vs[tx][c], v1 = Vs[tx + 16][c];
        dp[0][0] += o0 * v0;
        dp[0][1] += o0 * v1;
        dp[1][0] += o1 * v0;
        dp[1][1] += o1 * v1;
      }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int qr = ty + 16 * i, kc = tx + 16 * j;
        Ss[qr][kc] = p[i][j] * (dp[i][j] - D_s[qr]);
      }
    __syncthreads();
    // dQ[q][c] += sum_k dS[q][k] K[k][c], queries {ty, ty+16}, c {tx + 16 j}
    for (int kk = 0; kk < kn; ++kk) {
      const float s0 = Ss[ty][kk], s1 = Ss[ty + 16][kk];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float kv = Ks[kk][tx + 16 * j];
        dqa[0][j] += s0 * kv;
        dqa[1][j] += s1 * kv;
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t qi = q0 + ty + 16 * i;
    if (qi >= a.nq) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = tx + 16 * j;
      if (c < a.d) dq[(b * a.nq + qi) * a.ldq + c] = dqa[i][j];
    }
  }
}

void zero_dk_dv(const AttnDims& a, float* dk, float* dv, cudaStream_t stream) {
  attention_zero_dk_dv_cuda(a, dk, dv, stream);
}

void check_dims(const AttnDims& a) {
  GAN_CHECK(a.d >= 1 && a.d <= kAttnMaxD && a.dv >= 1 && a.dv <= kAttnMaxDv && a.nk >= 1 &&
                a.nq >= 0 && a.b >= 0 && a.b <= 65535,
            "attention_cuda: need 1 <= d <= 64, 1 <= dv <= 1024, Nk >= 1, B <= 65535 (got d " +
                std::to_string(a.d) + ", dv " + std::to_string(a.dv) + ", Nk " +
                std::to_string(a.nk) + ", B " + std::to_string(a.b) + ")");
}

// Calls f(std::integral_constant<int, NCH>) with the smallest NCH in {1, 2, 4, 8, 16} covering dv.
template <class F>
void with_chunks(int64_t dv, F&& f) {
  const int64_t n = (dv + kChunk - 1) / kChunk;
  if (n <= 1)
    f(std::integral_constant<int, 1>{});
  else if (n <= 2)
    f(std::integral_constant<int, 2>{});
  else if (n <= 4)
    f(std::integral_constant<int, 4>{});
  else if (n <= 8)
    f(std::integral_constant<int, 8>{});
  else
    f(std::integral_constant<int, 16>{});
}

}  // namespace

void attention_forward_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                            float* o, float* lse, const float* gamma, const float* x, float* y,
                            cudaStream_t stream) {
  GAN_NVTX("attention_forward");
  check_dims(a);
  if (a.nq == 0 || a.b == 0) return;
  const dim3 grid(unsigned((a.nq + kT - 1) / kT), unsigned(a.b));
  with_chunks(a.dv, [&](auto nch) {
    launch(attn_forward_kernel<decltype(nch)::value>, grid, kThreads, 0, stream, a, q, k, v, o, lse,
           gamma, x, y);
  });
  GAN_CUDA_CHECK_LAUNCH();
}

void attention_zero_dk_dv_cuda(const AttnDims& a, float* dk, float* dv, cudaStream_t stream) {
  if (dk)
    GAN_CUDA_CHECK(
        cudaMemset2DAsync(dk, size_t(a.ldk) * 4, 0, size_t(a.d) * 4, size_t(a.b * a.nk), stream));
  if (dv)
    GAN_CUDA_CHECK(
        cudaMemset2DAsync(dv, size_t(a.ldv) * 4, 0, size_t(a.dv) * 4, size_t(a.b * a.nk), stream));
}

void attention_row_dots_cuda(const AttnDims& a, const float* dy, const float* o, float* drow,
                             float* dgamma, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream) {
  const int64_t rows = a.b * a.nq;
  if (rows > 0) {
    launch(attn_row_dot_kernel, grid_blocks(rows * 32, 256), 256, 0, stream, rows, a.dv, a.ldo, dy,
           o, drow);
    GAN_CUDA_CHECK_LAUNCH();
  }
  if (dgamma)
    reduce_sum_cuda(drow, 1, rows, 1, 1.f, false, dgamma, workspace, workspace_bytes, stream);
}

size_t attention_backward_workspace_bytes(const AttnDims& a) {
  return reduce_sum_workspace_bytes(1, a.b * a.nq, 1);
}

void attention_backward_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                             const float* o, const float* lse, const float* dy, const float* scale,
                             float* dq, float* dk, float* dv, float* dgamma, float* drow,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  GAN_NVTX("attention_backward");
  check_dims(a);
  if (a.b == 0) return;
  const int64_t rows = a.b * a.nq;
  attention_row_dots_cuda(a, dy, o, drow, dgamma, workspace, workspace_bytes, stream);
  if (rows == 0) return zero_dk_dv(a, dk, dv, stream);  // no queries
  with_chunks(a.dv, [&](auto nch) {
    constexpr int N = decltype(nch)::value;
    if (dk || dv) {
      const dim3 grid(unsigned((a.nk + kT - 1) / kT), unsigned(a.b));
      launch(attn_dkdv_kernel<N>, grid, kThreads, 0, stream, a, q, k, v, lse, dy, scale, drow, dk,
             dv);
      GAN_CUDA_CHECK_LAUNCH();
    }
    if (dq) {
      const dim3 grid(unsigned((a.nq + kT - 1) / kT), unsigned(a.b));
      launch(attn_dq_kernel<N>, grid, kThreads, 0, stream, a, q, k, v, lse, dy, scale, drow, dq);
      GAN_CUDA_CHECK_LAUNCH();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Materialised version.

namespace {

constexpr int kRowThreads = 256;

// One block per row of S (B Nq rows of Nk): P = softmax(S) in place, lse saved.
__global__ void __launch_bounds__(kRowThreads)
    attn_softmax_rows_kernel(float* __restrict__ s, int64_t nk, float* __restrict__ lse) {
  __shared__ BlockReduceStorage<kRowThreads> red;
  float* row = s + int64_t(blockIdx.x) * nk;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_reduce<true>(m, red);
  float l = 0.f;
  for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) l += expf(row[j] - m);
  l = block_reduce<false>(l, red);
  const float inv = 1.f / l;
  for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) row[j] = expf(row[j] - m) * inv;
  if (threadIdx.x == 0) lse[blockIdx.x] = m + logf(l);
}

// y = gamma o + x over (B Nq) rows of dv (row stride ld).
__global__ void attn_epilogue_kernel(int64_t rows, int64_t dv, int64_t ld,
                                     const float* __restrict__ gamma, const float* __restrict__ o,
                                     const float* __restrict__ x, float* __restrict__ y) {
  const float g = *gamma;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < rows * dv;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / dv, c = e % dv;
    y[r * ld + c] = g * o[r * ld + c] + x[r * ld + c];
  }
}

// One block per row. p holds S = Q K^T, dp holds dy V^T. Afterwards P = exp(S - lse) is scaled by
// g (so that P^T dy is dV) and dp holds dS = g P (dP - sum_j P dP).
__global__ void __launch_bounds__(kRowThreads)
    attn_softmax_rows_backward_kernel(float* __restrict__ p, float* __restrict__ dp, int64_t nk,
                                      const float* __restrict__ lse,
                                      const float* __restrict__ scale) {
  __shared__ BlockReduceStorage<kRowThreads> red;
  float* prow = p + int64_t(blockIdx.x) * nk;
  float* drow = dp + int64_t(blockIdx.x) * nk;
  const float l = lse[blockIdx.x], g = scale ? *scale : 1.f;
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) {
    const float pj = expf(prow[j] - l);
    prow[j] = pj;
    sum += pj * drow[j];
  }
  sum = block_reduce<false>(sum, red);
  for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) {
    const float pj = prow[j];
    drow[j] = g * pj * (drow[j] - sum);
    prow[j] = g * pj;
  }
}

void check_gemm_dims(const AttnDims& a) {
  GAN_CHECK(a.d >= 1 && a.dv >= 1 && a.nk >= 1 && a.nq >= 0 && a.b >= 0 &&
                a.b * a.nq <= int64_t(INT32_MAX),
            "attention_gemm_cuda: need d, dv, Nk >= 1 and B Nq < 2^31 (got d " +
                std::to_string(a.d) + ", dv " + std::to_string(a.dv) + ", Nk " +
                std::to_string(a.nk) + ", B " + std::to_string(a.b) + ")");
}

// C (B x [m, n], row stride ldc, batch stride sc) = op(A) op(B), both batched.
Gemm batched(int64_t m, int64_t n, int64_t k, int64_t batch, bool ta, int64_t lda, int64_t sa,
             bool tb, int64_t ldb, int64_t sb, int64_t ldc, int64_t sc) {
  Gemm g;
  g.m = m, g.n = n, g.k = k, g.batch = batch;
  g.trans_a = ta, g.lda = lda, g.stride_a = sa;
  g.trans_b = tb, g.ldb = ldb, g.stride_b = sb;
  g.ldc = ldc, g.stride_c = sc;
  return g;
}

}  // namespace

void attention_forward_gemm_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                                 float* o, float* lse, const float* gamma, const float* x, float* y,
                                 float* s, cublasHandle_t handle, cudaStream_t stream) {
  GAN_NVTX("attention_forward_gemm");
  check_gemm_dims(a);
  if (a.nq == 0 || a.b == 0) return;
  const int64_t nn = a.nq * a.nk, rows = a.b * a.nq;
  // S (Nq, Nk) = Q K^T
  gemm_cuda(batched(a.nq, a.nk, a.d, a.b, false, a.ldq, a.nq * a.ldq, true, a.ldk, a.nk * a.ldk,
                    a.nk, nn),
            1.f, q, k, 0.f, s, handle);
  launch(attn_softmax_rows_kernel, unsigned(rows), kRowThreads, 0, stream, s, a.nk, lse);
  GAN_CUDA_CHECK_LAUNCH();
  // O (Nq, dv) = P V
  gemm_cuda(batched(a.nq, a.dv, a.nk, a.b, false, a.nk, nn, false, a.ldv, a.nk * a.ldv, a.ldo,
                    a.nq * a.ldo),
            1.f, s, v, 0.f, o, handle);
  if (y) {
    launch(attn_epilogue_kernel, grid_blocks(rows * a.dv, 256), 256, 0, stream, rows, a.dv, a.ldo,
           gamma, o, x, y);
    GAN_CUDA_CHECK_LAUNCH();
  }
}

void attention_backward_gemm_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                                  const float* o, const float* lse, const float* dy,
                                  const float* scale, float* dq, float* dk, float* dv,
                                  float* dgamma, float* drow, float* p, float* dp, void* workspace,
                                  size_t workspace_bytes, cublasHandle_t handle,
                                  cudaStream_t stream) {
  GAN_NVTX("attention_backward_gemm");
  check_gemm_dims(a);
  if (a.b == 0) return;
  const int64_t nn = a.nq * a.nk, rows = a.b * a.nq;
  if (dgamma) {
    if (rows > 0) {
      launch(attn_row_dot_kernel, grid_blocks(rows * 32, 256), 256, 0, stream, rows, a.dv, a.ldo,
             dy, o, drow);
      GAN_CUDA_CHECK_LAUNCH();
    }
    reduce_sum_cuda(drow, 1, rows, 1, 1.f, false, dgamma, workspace, workspace_bytes, stream);
  }
  if (!dq && !dk && !dv) return;
  if (rows == 0) return zero_dk_dv(a, dk, dv, stream);  // no queries
  // p = S = Q K^T (P recomputed from lse), dp = dy V^T
  gemm_cuda(batched(a.nq, a.nk, a.d, a.b, false, a.ldq, a.nq * a.ldq, true, a.ldk, a.nk * a.ldk,
                    a.nk, nn),
            1.f, q, k, 0.f, p, handle);
  gemm_cuda(batched(a.nq, a.nk, a.dv, a.b, false, a.ldo, a.nq * a.ldo, true, a.ldv, a.nk * a.ldv,
                    a.nk, nn),
            1.f, dy, v, 0.f, dp, handle);
  launch(attn_softmax_rows_backward_kernel, unsigned(rows), kRowThreads, 0, stream, p, dp, a.nk,
         lse, scale);
  GAN_CUDA_CHECK_LAUNCH();
  // dV (Nk, dv) = (g P)^T dy
  if (dv)
    gemm_cuda(batched(a.nk, a.dv, a.nq, a.b, true, a.nk, nn, false, a.ldo, a.nq * a.ldo, a.ldv,
                      a.nk * a.ldv),
              1.f, p, dy, 0.f, dv, handle);
  // dQ (Nq, d) = dS K
  if (dq)
    gemm_cuda(batched(a.nq, a.d, a.nk, a.b, false, a.nk, nn, false, a.ldk, a.nk * a.ldk, a.ldq,
                      a.nq * a.ldq),
              1.f, dp, k, 0.f, dq, handle);
  // dK (Nk, d) = dS^T Q
  if (dk)
    gemm_cuda(batched(a.nk, a.d, a.nq, a.b, true, a.nk, nn, false, a.ldq, a.nq * a.ldq, a.ldk,
                      a.nk * a.ldk),
              1.f, dp, q, 0.f, dk, handle);
}

}  // namespace gan::kernels
