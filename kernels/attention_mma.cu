// Flash-style attention on tensor cores, version 3 (mma.sync m16n8k8 TF32;
// docs/kernels/attention.md).
//
// 128 threads = 4 warps; a warp owns 16 rows of every product (queries in the forward and dQ
// kernels, keys in the dK/dV kernel), so the softmax statistics of a row live in the 4 lanes that
// hold it (lane = 4 g + t holds rows g and g + 8, columns 2t and 2t + 1 of each 8-column tile).
// A product's result P (C-fragment layout) feeds the next product as its A operand without a trip
// through shared memory: the k index of the second product is permuted so that its logical column
// t is physical column 2t and t + 4 is 2t + 1; the B operand is read from shared memory with the
// same permutation (sum over k is order-free). Shared-memory row strides are 4 mod 8 (operand
// rows of d) and 4 mod 16 (value rows), so every fragment read is free of bank conflicts.
//
// Value columns come in 64-wide chunks, one chunk per block in grid.y (forward, dV), so register
// use does not grow with dv; dP = dO V^T contracts over every chunk in the blocks that need it.
// BF16: operands rounded to bf16 as they are read from shared memory (which holds float32), f32
// accumulation; P's C fragments of two 8-key tiles are the A fragment of a k16 step directly.
// 3xTF32 (SPLIT): each operand x = hi + lo with hi = tf32(x), lo = tf32(x - hi); the product
// hi hi + (hi lo + lo hi), the correction terms summed first in a separate register set and
// dropped when not finite (an infinite hi times a zero lo would otherwise make NaN).
#include <algorithm>
#include <cstring>

#include "kernels/attention.h"
#include "kernels/mma.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kThreadsM = 128;  // 4 warps
constexpr int kRows = 64;       // rows owned by a block (4 warps x 16)
constexpr int kCols = 64;       // keys per step in the forward kernel
constexpr int kStep = 32;       // queries (dK/dV kernel) or keys (dQ kernel) per step backward
constexpr int kDvc = 64;        // value columns per chunk
constexpr int kVs = kDvc + 4;   // smem stride of value rows (4 mod 16)

__device__ __forceinline__ float as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <bool SPLIT>
struct FragA {
  uint32_t hi[4], lo[4];
  __device__ __forceinline__ FragA(float a0, float a1, float a2, float a3) {
    const float a[4] = {a0, a1, a2, a3};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      hi[i] = mma::to_tf32(a[i]);
      lo[i] = SPLIT && isfinite(a[i]) ? mma::to_tf32(a[i] - as_float(hi[i])) : 0u;
    }
  }
};

template <bool SPLIT>
struct FragB {
  uint32_t hi[2], lo[2];
  __device__ __forceinline__ FragB(float b0, float b1) {
    const float b[2] = {b0, b1};
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      hi[i] = mma::to_tf32(b[i]);
      lo[i] = SPLIT && isfinite(b[i]) ? mma::to_tf32(b[i] - as_float(hi[i])) : 0u;
    }
  }
};

// c += a b in TF32 or 3xTF32.
template <bool SPLIT>
__device__ __forceinline__ void mma_acc(float (&c)[4], const FragA<SPLIT>& a,
                                        const FragB<SPLIT>& b) {
  if constexpr (SPLIT) {
    float e[4] = {0.f, 0.f, 0.f, 0.f};
    mma::mma_m16n8k8_tf32(e, a.lo, b.hi, e);
    mma::mma_m16n8k8_tf32(e, a.hi, b.lo, e);
#pragma unroll
    for (int i = 0; i < 4; ++i) c[i] += isfinite(e[i]) ? e[i] : 0.f;
  }
  mma::mma_m16n8k8_tf32(c, a.hi, b.hi, c);
}

// dst[r * stride + c] = src[(row0 + r) * ld + col0 + c] for r < R, c < C; zero where r >= rows or
// c >= cols (tile edges).
template <int R, int C>
__device__ __forceinline__ void load_rows(float* dst, int stride, const float* __restrict__ src,
                                          int64_t row0, int64_t rows, int64_t ld, int64_t col0,
                                          int64_t cols) {
  for (int e = int(threadIdx.x); e < R * C; e += kThreadsM) {
    const int r = e / C, c = e % C;
    dst[r * stride + c] = (r < rows && c < cols) ? src[(row0 + r) * ld + col0 + c] : 0.f;
  }
}

// Max and sum over the 4 lanes that share a row.
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// The kernels' precision: M = kMTF32, kM3xTF32 (m16n8k8, k steps of 8) or kMBF16 (m16n8k16,
// k steps of 16: operands rounded to bf16 as they are read).
constexpr int kMTF32 = 0, kM3xTF32 = 1, kMBF16 = 2;

// acc[nt] += P W: P (16 x 8 KT) held as C fragments p[kk] (kk < KT), W (8 KT x 8 NT) rows of
// `w` (stride ws). TF32: fragment row t is physical row 2t (the k permutation); BF16: the C
// fragments of two adjacent 8-column tiles are the A fragment of one k16 step as they are.
template <int M, int KT, int NT>
__device__ __forceinline__ void frag_times_smem(float (&acc)[NT][4], const float (&p)[KT][4],
                                                const float* w, int ws, int g, int t) {
  if constexpr (M == kMBF16) {
    static_assert(KT % 2 == 0, "bf16: k steps of 16");
#pragma unroll
    for (int kk = 0; kk < KT / 2; ++kk) {
      const uint32_t a[4] = {mma::pack_bf16(p[2 * kk][0], p[2 * kk][1]),
                             mma::pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                             mma::pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                             mma::pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
      const float* r0 = w + (kk * 16 + 2 * t) * ws + g;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float* r = r0 + nt * 8;
        const uint32_t b[2] = {mma::pack_bf16(r[0], r[ws]), mma::pack_bf16(r[8 * ws], r[9 * ws])};
        mma::mma_m16n8k16_bf16(acc[nt], a, b, acc[nt]);
      }
    }
  } else {
    constexpr bool SPLIT = M == kM3xTF32;
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
      const FragA<SPLIT> fa(p[kk][0], p[kk][2], p[kk][1], p[kk][3]);
      const float* r0 = w + (kk * 8 + 2 * t) * ws + g;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const FragB<SPLIT> fb(r0[nt * 8], r0[ws + nt * 8]);
        mma_acc<SPLIT>(acc[nt], fa, fb);
      }
    }
  }
}

// acc[nt] += A B^T over KT 8-wide k tiles: A rows (16, stride as) and B rows (8 NT, stride bs),
// both row-major with the contraction index along the row.
template <int M, int KT, int NT>
__device__ __forceinline__ void smem_times_smem_t(float (&acc)[NT][4], const float* a, int as,
                                                  const float* b, int bs, int g, int t) {
  if constexpr (M == kMBF16) {
    static_assert(KT % 2 == 0, "bf16: k steps of 16");
#pragma unroll
    for (int kt = 0; kt < KT / 2; ++kt) {
      const float* ar = a + g * as + kt * 16 + 2 * t;
      const uint32_t fa[4] = {
          mma::pack_bf16(ar[0], ar[1]), mma::pack_bf16(ar[8 * as], ar[8 * as + 1]),
          mma::pack_bf16(ar[8], ar[9]), mma::pack_bf16(ar[8 * as + 8], ar[8 * as + 9])};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float* br = b + (nt * 8 + g) * bs + kt * 16 + 2 * t;
        const uint32_t fb[2] = {mma::pack_bf16(br[0], br[1]), mma::pack_bf16(br[8], br[9])};
        mma::mma_m16n8k16_bf16(acc[nt], fa, fb, acc[nt]);
      }
    }
  } else {
    constexpr bool SPLIT = M == kM3xTF32;
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
      const float* ar = a + g * as + kt * 8 + t;
      const FragA<SPLIT> fa(ar[0], ar[8 * as], ar[4], ar[8 * as + 4]);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float* br = b + (nt * 8 + g) * bs + kt * 8 + t;
        const FragB<SPLIT> fb(br[0], br[4]);
        mma_acc<SPLIT>(acc[nt], fa, fb);
      }
    }
  }
}

template <int NT>
__device__ __forceinline__ void zero(float (&x)[NT][4]) {
#pragma unroll
  for (int i = 0; i < NT; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) x[i][j] = 0.f;
}

// grid (ceil(Nq / 64), value chunks, B). o always written, lse by chunk 0, y = gamma o + x when
// y != nullptr.
template <int DKT, int M>
__global__ void __launch_bounds__(kThreadsM)
    attn_mma_forward_kernel(AttnDims a, const float* __restrict__ q, const float* __restrict__ k,
                            const float* __restrict__ v, float* __restrict__ o,
                            float* __restrict__ lse, const float* __restrict__ gamma,
                            const float* __restrict__ x, float* __restrict__ y) {
  constexpr int DK = 8 * DKT, QS = DK + 4;
  GAN_DYNAMIC_SHARED(float, smem);
  float* Qs = smem;             // [kRows][QS]
  float* Ks = Qs + kRows * QS;  // [kCols][QS]
  float* Vs = Ks + kCols * QS;  // [kCols][kVs]
  const int64_t b = blockIdx.z, q0 = int64_t(blockIdx.x) * kRows, c0 = int64_t(blockIdx.y) * kDvc;
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31, g = lane >> 2, t = lane & 3;
  load_rows<kRows, DK>(Qs, QS, q, b * a.nq + q0, a.nq - q0, a.ldq, 0, a.d);
  const float* Qw = Qs + warp * 16 * QS;

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float acc[kDvc / 8][4];
  zero(acc);
  for (int64_t k0 = 0; k0 < a.nk; k0 += kCols) {
    const int64_t kn = min(int64_t(kCols), a.nk - k0);
    __syncthreads();  // the previous step's reads of Ks and Vs are done
    load_rows<kCols, DK>(Ks, QS, k, b * a.nk + k0, kn, a.ldk, 0, a.d);
    load_rows<kCols, kDvc>(Vs, kVs, v, b * a.nk + k0, kn, a.ldv, c0, a.dv - c0);
    __syncthreads();
    float s[kCols / 8][4];
    zero(s);
    smem_times_smem_t<M, DKT>(s, Qw, QS, Ks, QS, g, t);
    if (kn < kCols)
#pragma unroll
      for (int nt = 0; nt < kCols / 8; ++nt)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (nt * 8 + 2 * t + (j & 1) >= kn) s[nt][j] = -INFINITY;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kCols / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
      const float mnew = fmaxf(m[i], quad_max(mx));
      const float corr = expf(m[i] - mnew);
      float rs = 0.f;
#pragma unroll
      for (int nt = 0; nt < kCols / 8; ++nt)
#pragma unroll
        for (int j = 2 * i; j < 2 * i + 2; ++j) {
          s[nt][j] = expf(s[nt][j] - mnew);
          rs += s[nt][j];
        }
      l[i] = l[i] * corr + rs;  // this lane's part of the row sum
      m[i] = mnew;
#pragma unroll
      for (int nt = 0; nt < kDvc / 8; ++nt) {
        acc[nt][2 * i] *= corr;
        acc[nt][2 * i + 1] *= corr;
      }
    }
    frag_times_smem<M, kCols / 8>(acc, s, Vs, kVs, g, t);
  }

  const float gm = gamma ? *gamma : 0.f;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float li = quad_sum(l[i]);
    const int64_t qi = q0 + warp * 16 + g + 8 * i;
    if (qi >= a.nq) continue;
    const float inv = 1.f / li;
    const int64_t row = (b * a.nq + qi) * a.ldo;
#pragma unroll
    for (int nt = 0; nt < kDvc / 8; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t col = c0 + nt * 8 + 2 * t + j;
        if (col >= a.dv) continue;
        const float ov = acc[nt][2 * i + j] * inv;
        o[row + col] = ov;
        if (y) y[row + col] = gm * ov + x[row + col];
      }
    if (blockIdx.y == 0 && t == 0) lse[b * a.nq + qi] = m[i] + logf(li);
  }
}

// grid (ceil(Nk / 64), value chunks (1 without dv), B): the block's 64 keys walk every query step
// of 32. Chunk ch accumulates dV's columns [64 ch, 64 ch + 64); chunk 0 also dK (dP = dO V^T
// over all nch chunks). drow holds dy . o; scale is gamma (dO = gamma dy) or null.
template <int DKT, int M>
__global__ void __launch_bounds__(kThreadsM)
    attn_mma_dkdv_kernel(AttnDims a, int nch, const float* __restrict__ q,
                         const float* __restrict__ k, const float* __restrict__ v,
                         const float* __restrict__ lse, const float* __restrict__ dy,
                         const float* __restrict__ scale, const float* __restrict__ drow,
                         float* __restrict__ dk, float* __restrict__ dv) {
  constexpr int DK = 8 * DKT, QS = DK + 4;
  GAN_DYNAMIC_SHARED(float, smem);
  float* Ks = smem;              // [kRows][QS]
  float* Vs = Ks + kRows * QS;   // [kRows][kVs]
  float* Qs = Vs + kRows * kVs;  // [kStep][QS]
  float* dOs = Qs + kStep * QS;  // [kStep][kVs]
  float* lse_s = dOs + kStep * kVs;
  float* D_s = lse_s + kStep;
  const int64_t b = blockIdx.z, k0 = int64_t(blockIdx.x) * kRows;
  const int ch = int(blockIdx.y);
  const int64_t c0 = int64_t(ch) * kDvc, kn = min(int64_t(kRows), a.nk - k0);
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31, g = lane >> 2, t = lane & 3;
  const float gs = scale ? *scale : 1.f;
  const bool do_dk = dk != nullptr && ch == 0, do_dv = dv != nullptr;
  load_rows<kRows, DK>(Ks, QS, k, b * a.nk + k0, kn, a.ldk, 0, a.d);
  if (do_dk && nch == 1) load_rows<kRows, kDvc>(Vs, kVs, v, b * a.nk + k0, kn, a.ldv, 0, a.dv);
  const float* Kw = Ks + warp * 16 * QS;
  const float* Vw = Vs + warp * 16 * kVs;

  float dka[DKT][4], dva[kDvc / 8][4];
  zero(dka);
  zero(dva);
  for (int64_t q0 = 0; q0 < a.nq; q0 += kStep) {
    const int64_t qn = min(int64_t(kStep), a.nq - q0);
    __syncthreads();  // the previous step's reads are done
    load_rows<kStep, DK>(Qs, QS, q, b * a.nq + q0, qn, a.ldq, 0, a.d);
    if (!do_dk || nch == 1)
      load_rows<kStep, kDvc>(dOs, kVs, dy, b * a.nq + q0, qn, a.ldo, c0, a.dv - c0);
    if (threadIdx.x < kStep) {
      const bool ok = int64_t(threadIdx.x) < qn;
      lse_s[threadIdx.x] = ok ? lse[b * a.nq + q0 + threadIdx.x] : INFINITY;  // P = 0
      D_s[threadIdx.x] = ok ? gs * drow[b * a.nq + q0 + threadIdx.x] : 0.f;
    }
    __syncthreads();
    // P^T (16 keys x 32 queries) = exp(K Q^T - lse)
    float p[kStep / 8][4];
    zero(p);
    smem_times_smem_t<M, DKT>(p, Kw, QS, Qs, QS, g, t);
#pragma unroll
    for (int nt = 0; nt < kStep / 8; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) p[nt][j] = expf(p[nt][j] - lse_s[nt * 8 + 2 * t + (j & 1)]);
    if (do_dk) {
      // dP^T = V dO^T over every value chunk (with one chunk V stays in shared memory).
      float dp[kStep / 8][4];
      zero(dp);
      if (nch == 1) {
        smem_times_smem_t<M, kDvc / 8>(dp, Vw, kVs, dOs, kVs, g, t);
      } else {
        for (int cc = nch - 1; cc >= 0; --cc) {  // ends on chunk 0, this block's dV chunk
          __syncthreads();
          load_rows<kRows, kDvc>(Vs, kVs, v, b * a.nk + k0, kn, a.ldv, int64_t(cc) * kDvc,
                                 a.dv - int64_t(cc) * kDvc);
          load_rows<kStep, kDvc>(dOs, kVs, dy, b * a.nq + q0, qn, a.ldo, int64_t(cc) * kDvc,
                                 a.dv - int64_t(cc) * kDvc);
          __syncthreads();
          smem_times_smem_t<M, kDvc / 8>(dp, Vw, kVs, dOs, kVs, g, t);
        }
      }
      // dS^T = P^T (g dP^T - D); dK += dS^T Q
#pragma unroll
      for (int nt = 0; nt < kStep / 8; ++nt)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          dp[nt][j] = p[nt][j] * (gs * dp[nt][j] - D_s[nt * 8 + 2 * t + (j & 1)]);
      frag_times_smem<M, kStep / 8>(dka, dp, Qs, QS, g, t);
    }
    if (do_dv) frag_times_smem<M, kStep / 8>(dva, p, dOs, kVs, g, t);
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t kj = k0 + warp * 16 + g + 8 * i;
    if (kj >= a.nk) continue;
    const int64_t r = b * a.nk + kj;
    if (do_dk)
#pragma unroll
      for (int nt = 0; nt < DKT; ++nt)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int col = nt * 8 + 2 * t + j;
          if (col < a.d) dk[r * a.ldk + col] = dka[nt][2 * i + j];
        }
    if (do_dv)
#pragma unroll
      for (int nt = 0; nt < kDvc / 8; ++nt)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int64_t col = c0 + nt * 8 + 2 * t + j;
          if (col < a.dv) dv[r * a.ldv + col] = gs * dva[nt][2 * i + j];
        }
  }
}

// grid (ceil(Nq / 64), B): dQ of the block's 64 queries, walking every key step of 32.
template <int DKT, int M>
__global__ void __launch_bounds__(kThreadsM)
    attn_mma_dq_kernel(AttnDims a, int nch, const float* __restrict__ q,
                       const float* __restrict__ k, const float* __restrict__ v,
                       const float* __restrict__ lse, const float* __restrict__ dy,
                       const float* __restrict__ scale, const float* __restrict__ drow,
                       float* __restrict__ dq) {
  constexpr int DK = 8 * DKT, QS = DK + 4;
  GAN_DYNAMIC_SHARED(float, smem);
  float* Qs = smem;               // [kRows][QS]
  float* dOs = Qs + kRows * QS;   // [kRows][kVs]
  float* Ks = dOs + kRows * kVs;  // [kStep][QS]
  float* Vs = Ks + kStep * QS;    // [kStep][kVs]
  const int64_t b = blockIdx.y, q0 = int64_t(blockIdx.x) * kRows;
  const int64_t qn = min(int64_t(kRows), a.nq - q0);
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31, g = lane >> 2, t = lane & 3;
  const float gs = scale ? *scale : 1.f;
  load_rows<kRows, DK>(Qs, QS, q, b * a.nq + q0, qn, a.ldq, 0, a.d);
  if (nch == 1) load_rows<kRows, kDvc>(dOs, kVs, dy, b * a.nq + q0, qn, a.ldo, 0, a.dv);
  const float* Qw = Qs + warp * 16 * QS;
  const float* dOw = dOs + warp * 16 * kVs;
  float lse_r[2], D_r[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t qi = q0 + warp * 16 + g + 8 * i;
    lse_r[i] = qi < a.nq ? lse[b * a.nq + qi] : INFINITY;  // P = 0 for rows past the end
    D_r[i] = qi < a.nq ? gs * drow[b * a.nq + qi] : 0.f;
  }

  float dqa[DKT][4];
  zero(dqa);
  for (int64_t k0 = 0; k0 < a.nk; k0 += kStep) {
    const int64_t kn = min(int64_t(kStep), a.nk - k0);
    __syncthreads();  // the previous step's reads are done
    load_rows<kStep, DK>(Ks, QS, k, b * a.nk + k0, kn, a.ldk, 0, a.d);
    if (nch == 1) load_rows<kStep, kDvc>(Vs, kVs, v, b * a.nk + k0, kn, a.ldv, 0, a.dv);
    __syncthreads();
    float p[kStep / 8][4], dp[kStep / 8][4];
    zero(p);
    zero(dp);
    smem_times_smem_t<M, DKT>(p, Qw, QS, Ks, QS, g, t);
#pragma unroll
    for (int nt = 0; nt < kStep / 8; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        p[nt][j] = nt * 8 + 2 * t + (j & 1) < kn ? expf(p[nt][j] - lse_r[j >> 1]) : 0.f;
    if (nch == 1) {
      smem_times_smem_t<M, kDvc / 8>(dp, dOw, kVs, Vs, kVs, g, t);
    } else {
      for (int cc = 0; cc < nch; ++cc) {
        __syncthreads();
        load_rows<kRows, kDvc>(dOs, kVs, dy, b * a.nq + q0, qn, a.ldo, int64_t(cc) * kDvc,
                               a.dv - int64_t(cc) * kDvc);
        load_rows<kStep, kDvc>(Vs, kVs, v, b * a.nk + k0, kn, a.ldv, int64_t(cc) * kDvc,
                               a.dv - int64_t(cc) * kDvc);
        __syncthreads();
        smem_times_smem_t<M, kDvc / 8>(dp, dOw, kVs, Vs, kVs, g, t);
      }
    }
    // dS = P (g dP - D); dQ += dS K
#pragma unroll
    for (int nt = 0; nt < kStep / 8; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) dp[nt][j] = p[nt][j] * (gs * dp[nt][j] - D_r[j >> 1]);
    frag_times_smem<M, kStep / 8>(dqa, dp, Ks, QS, g, t);
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t qi = q0 + warp * 16 + g + 8 * i;
    if (qi >= a.nq) continue;
#pragma unroll
    for (int nt = 0; nt < DKT; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int col = nt * 8 + 2 * t + j;
        if (col < a.d) dq[(b * a.nq + qi) * a.ldq + col] = dqa[nt][2 * i + j];
      }
  }
}

void check_mma_dims(const AttnDims& a) {
  GAN_CHECK(a.d >= 1 && a.d <= kAttnMmaMaxD && a.dv >= 1 && a.nk >= 1 && a.nq >= 0 && a.b >= 0 &&
                a.b <= 65535 && (a.dv + kDvc - 1) / kDvc <= 65535,
            "attention_mma_cuda: need 1 <= d <= 128, dv >= 1, Nk >= 1, B <= 65535 (got d " +
                std::to_string(a.d) + ", dv " + std::to_string(a.dv) + ", Nk " +
                std::to_string(a.nk) + ", B " + std::to_string(a.b) + ")");
}

// Calls f(integral_constant<int, DKT>, integral_constant<int, M>) with the smallest DKT in
// {1, 2, 4, 8, 16} such that 8 DKT >= d (at least 2 in bf16: k steps of 16).
template <class F>
void with_variant(int64_t d, AttnMath math, F&& f) {
  auto prec = [&](auto dkt) {
    if (math == AttnMath::k3xTF32)
      f(dkt, std::integral_constant<int, kM3xTF32>{});
    else if (math == AttnMath::kBF16)
      f(std::integral_constant<int, std::max(2, decltype(dkt)::value)>{},
        std::integral_constant<int, kMBF16>{});
    else
      f(dkt, std::integral_constant<int, kMTF32>{});
  };
  if (d <= 8)
    prec(std::integral_constant<int, 1>{});
  else if (d <= 16)
    prec(std::integral_constant<int, 2>{});
  else if (d <= 32)
    prec(std::integral_constant<int, 4>{});
  else if (d <= 64)
    prec(std::integral_constant<int, 8>{});
  else
    prec(std::integral_constant<int, 16>{});
}

// Launches kernel with `smem` bytes of dynamic shared memory (opting in above 48 KB).
template <class... P, class... A>
void launch_smem(void (*kernel)(P...), dim3 grid, size_t smem, cudaStream_t stream, A&&... args) {
  if (smem > 48 * 1024)
    GAN_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  launch(kernel, grid, kThreadsM, smem, stream, std::forward<A>(args)...);
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace

const char* attn_math_name(AttnMath m) {
  return m == AttnMath::k3xTF32 ? "3xtf32" : m == AttnMath::kBF16 ? "bf16" : "tf32";
}

void attention_forward_mma_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                                float* o, float* lse, const float* gamma, const float* x, float* y,
                                AttnMath math, cudaStream_t stream) {
  GAN_NVTX("attention_forward_mma");
  check_mma_dims(a);
  if (a.nq == 0 || a.b == 0) return;
  const int nch = int((a.dv + kDvc - 1) / kDvc);
  with_variant(a.d, math, [&](auto dkt, auto prec) {
    constexpr int DKT = decltype(dkt)::value, QS = 8 * DKT + 4;
    const size_t smem = size_t(2 * kRows * QS + kCols * kVs) * 4;
    launch_smem(attn_mma_forward_kernel<DKT, decltype(prec)::value>,
                dim3(unsigned((a.nq + kRows - 1) / kRows), unsigned(nch), unsigned(a.b)), smem,
                stream, a, q, k, v, o, lse, gamma, x, y);
  });
}

void attention_backward_mma_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                                 const float* o, const float* lse, const float* dy,
                                 const float* scale, float* dq, float* dk, float* dv, float* dgamma,
                                 float* drow, void* workspace, size_t workspace_bytes,
                                 AttnMath math, cudaStream_t stream) {
  GAN_NVTX("attention_backward_mma");
  check_mma_dims(a);
  if (a.b == 0) return;
  attention_row_dots_cuda(a, dy, o, drow, dgamma, workspace, workspace_bytes, stream);
  if (a.nq == 0) return attention_zero_dk_dv_cuda(a, dk, dv, stream);  // no queries
  const int nch = int((a.dv + kDvc - 1) / kDvc);
  with_variant(a.d, math, [&](auto dkt, auto prec) {
    constexpr int DKT = decltype(dkt)::value, QS = 8 * DKT + 4;
    constexpr int S = decltype(prec)::value;
    if (dk || dv) {
      const size_t smem = size_t((kRows + kStep) * (QS + kVs) + 2 * kStep) * 4;
      launch_smem(attn_mma_dkdv_kernel<DKT, S>,
                  dim3(unsigned((a.nk + kRows - 1) / kRows), unsigned(dv ? nch : 1), unsigned(a.b)),
                  smem, stream, a, nch, q, k, v, lse, dy, scale, drow, dk, dv);
    }
    if (dq) {
      const size_t smem = size_t((kRows + kStep) * (QS + kVs)) * 4;
      launch_smem(attn_mma_dq_kernel<DKT, S>,
                  dim3(unsigned((a.nq + kRows - 1) / kRows), unsigned(a.b)), smem, stream, a, nch,
                  q, k, v, lse, dy, scale, drow, dq);
    }
  });
}

}  // namespace gan::kernels
