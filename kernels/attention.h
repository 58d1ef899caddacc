// SAGAN self-attention core: softmax over keys of Q K^T (no 1/sqrt(d) scale), times V.
//   q (B, Nq, d), k (B, Nk, d), v (B, Nk, dv) -> o (B, Nq, dv), lse (B, Nq)
//   s_ij = q_i . k_j,  lse_i = log sum_j exp(s_ij),  P_ij = exp(s_ij - lse_i),  o_i = sum_j P_ij
//   v_j
// Optional epilogue (the SAGAN block): y = gamma * o + x with gamma a scalar in memory, x (B, Nq,
// dv).
//
// Backward with upstream dO (= gamma * dy with the epilogue; the kernels take dy and a pointer to
// the scale):
//   D_i = dO_i . o_i,  dP_ij = dO_i . v_j,  dS_ij = P_ij (dP_ij - D_i)
//   dq_i = sum_j dS_ij k_j,  dk_j = sum_i dS_ij q_i,  dv_j = sum_i P_ij dO_i
//   dgamma = sum_i dy_i . o_i,  dx = dy.
//
// Every row of q, k, v, o and their gradients has its own stride (ld*), so q, k and v can be
// column ranges of one packed (B, N, 2d + dv) projection and dq, dk, dv column ranges of its
// gradient. The CUDA kernels never write the N x N matrix: they tile queries and keys (32 x 32),
// keep running softmax statistics (forward) or recompute P from the saved lse (backward), and split
// the value dimension into 64-column chunks held by every thread of the block, so exponentials are
// computed once per block. Deterministic: no atomics; fixed summation orders.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace gan::kernels {

struct AttnDims {
  int64_t b = 0, nq = 0, nk = 0, d = 0, dv = 0;
  int64_t ldq = 0, ldk = 0, ldv = 0;  // row strides (elements) of q, k, v
  int64_t ldo = 0;                    // row stride of o, x, y, dy (dense: dv)
};

// ---------------------------------------------------------------------------------------------
// CPU reference: the softmax materialised row by row in double.

// One softmax row: p (Nk) = softmax_j(q_i . k_j) of query row qi against batch item's keys kb;
// returns lse_i = log sum_j exp(q_i . k_j).
template <class T>
double softmax_row_cpu(const AttnDims& a, const T* qi, const T* kb, std::vector<double>& p) {
  double m = -INFINITY;
  for (int64_t j = 0; j < a.nk; ++j) {
    const T* kj = kb + j * a.ldk;
    double d = 0;
    for (int64_t c = 0; c < a.d; ++c) d += double(qi[c]) * double(kj[c]);
    p[size_t(j)] = d;
    m = std::max(m, d);
  }
  double l = 0;
  for (int64_t j = 0; j < a.nk; ++j) l += std::exp(p[size_t(j)] - m);
  for (int64_t j = 0; j < a.nk; ++j) p[size_t(j)] = std::exp(p[size_t(j)] - m) / l;
  return m + std::log(l);
}

// o (B, Nq, ldo), lse (B, Nq); with gamma and x (both non-null) also y = gamma o + x.
template <class T>
void attention_forward_cpu(const AttnDims& a, const T* q, const T* k, const T* v, T* o, T* lse,
                           const T* gamma, const T* x, T* y) {
  std::vector<double> p(size_t(a.nk > 0 ? a.nk : 1)), acc(size_t(a.dv > 0 ? a.dv : 1));
  for (int64_t b = 0; b < a.b; ++b)
    for (int64_t i = 0; i < a.nq; ++i) {
      const double row_lse =
          softmax_row_cpu(a, q + (b * a.nq + i) * a.ldq, k + b * a.nk * a.ldk, p);
      for (auto& x0 : acc) x0 = 0;
      for (int64_t j = 0; j < a.nk; ++j) {
        const T* vj = v + (b * a.nk + j) * a.ldv;
        for (int64_t c = 0; c < a.dv; ++c) acc[size_t(c)] += p[size_t(j)] * double(vj[c]);
      }
      T* oi = o + (b * a.nq + i) * a.ldo;
      for (int64_t c = 0; c < a.dv; ++c) oi[c] = T(acc[size_t(c)]);
      lse[b * a.nq + i] = T(row_lse);
      if (gamma && x) {
        const T* xi = x + (b * a.nq + i) * a.ldo;
        T* yi = y + (b * a.nq + i) * a.ldo;
        for (int64_t c = 0; c < a.dv; ++c)
          yi[c] = T(double(*gamma) * acc[size_t(c)] + double(xi[c]));
      }
    }
}

// dy (B, Nq, ldo): upstream gradient of o (scale null) or of y (scale = gamma: dO = gamma dy).
// Writes dq, dk, dv (any may be null) and, with the epilogue, dgamma (one value) = sum dy . o.
// lse must be the forward's.
template <class T>
void attention_backward_cpu(const AttnDims& a, const T* q, const T* k, const T* v, const T* o,
                            const T* lse, const T* dy, const T* scale, T* dq, T* dk, T* dv,
                            T* dgamma) {
  const double g = scale ? double(*scale) : 1.0;
  std::vector<double> dqa(size_t(a.d > 0 ? a.d : 1)), p(size_t(a.nk > 0 ? a.nk : 1));
  std::vector<double> dka(size_t(a.b * a.nk * a.d), 0.0), dva(size_t(a.b * a.nk * a.dv), 0.0);
  double dgam = 0;
  for (int64_t b = 0; b < a.b; ++b)
    for (int64_t i = 0; i < a.nq; ++i) {
      const T* qi = q + (b * a.nq + i) * a.ldq;
      const T* oi = o + (b * a.nq + i) * a.ldo;
      const T* dyi = dy + (b * a.nq + i) * a.ldo;
      double dyo = 0;
      for (int64_t c = 0; c < a.dv; ++c) dyo += double(dyi[c]) * double(oi[c]);
      dgam += dyo;
      const double D = g * dyo;
      const double l = double(lse[b * a.nq + i]);
      for (auto& x0 : dqa) x0 = 0;
      for (int64_t j = 0; j < a.nk; ++j) {
        const T* kj = k + (b * a.nk + j) * a.ldk;
        const T* vj = v + (b * a.nk + j) * a.ldv;
        double s = 0;
        for (int64_t c = 0; c < a.d; ++c) s += double(qi[c]) * double(kj[c]);
        const double pij = std::exp(s - l);
        double dp = 0;
        for (int64_t c = 0; c < a.dv; ++c) dp += g * double(dyi[c]) * double(vj[c]);
        const double ds = pij * (dp - D);
        for (int64_t c = 0; c < a.d; ++c) {
          dqa[size_t(c)] += ds * double(kj[c]);
          dka[size_t((b * a.nk + j) * a.d + c)] += ds * double(qi[c]);
        }
        for (int64_t c = 0; c < a.dv; ++c)
          dva[size_t((b * a.nk + j) * a.dv + c)] += pij * g * double(dyi[c]);
      }
      if (dq)
        for (int64_t c = 0; c < a.d; ++c) dq[(b * a.nq + i) * a.ldq + c] = T(dqa[size_t(c)]);
    }
  for (int64_t r = 0; r < a.b * a.nk; ++r) {
    if (dk)
      for (int64_t c = 0; c < a.d; ++c) dk[r * a.ldk + c] = T(dka[size_t(r * a.d + c)]);
    if (dv)
      for (int64_t c = 0; c < a.dv; ++c) dv[r * a.ldv + c] = T(dva[size_t(r * a.dv + c)]);
  }
  if (dgamma) *dgamma = T(dgam);
}

// Attention rows of chosen queries (for visualisation): rows (B, len(queries), Nk), in double.
template <class T>
std::vector<double> attention_rows_cpu(const AttnDims& a, const T* q, const T* k,
                                       const std::vector<int64_t>& queries) {
  std::vector<double> out, p(size_t(a.nk > 0 ? a.nk : 1));
  for (int64_t b = 0; b < a.b; ++b)
    for (int64_t i : queries) {
      softmax_row_cpu(a, q + (b * a.nq + i) * a.ldq, k + b * a.nk * a.ldk, p);
      out.insert(out.end(), p.begin(), p.begin() + a.nk);
    }
  return out;
}

// ---------------------------------------------------------------------------------------------
// CUDA. Limits: 1 <= d <= 64, 1 <= dv <= 1024 (any N >= 1).

constexpr int64_t kAttnMaxD = 64, kAttnMaxDv = 1024;

// o, lse as above; gamma, x, y may be null (no epilogue).
void attention_forward_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                            float* o, float* lse, const float* gamma, const float* x, float* y,
                            cudaStream_t stream);
// drow (B, Nq) scratch for the row dots dy . o. dgamma may be null; workspace from
// attention_backward_workspace_bytes (for the dgamma reduction).
size_t attention_backward_workspace_bytes(const AttnDims& a);
void attention_backward_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                             const float* o, const float* lse, const float* dy, const float* scale,
                             float* dq, float* dk, float* dv, float* dgamma, float* drow,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream);

// Shared by the CUDA versions: drow = dy . o per row (and dgamma = sum drow when dgamma is not
// null; workspace from attention_backward_workspace_bytes); dK, dV zeroed (no queries).
void attention_row_dots_cuda(const AttnDims& a, const float* dy, const float* o, float* drow,
                             float* dgamma, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream);
void attention_zero_dk_dv_cuda(const AttnDims& a, float* dk, float* dv, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// CUDA, tensor-core version (kernels/attention_mma.cu; v3 in docs/kernels/attention.md): the
// same tiling idea as the tiled kernels (S never stored, online softmax, lse saved, backward
// recomputes P in a key-owning and a query-owning kernel, deterministic), with every product on
// mma.sync m16n8k8. Math:
//   kTF32     operands rounded to TF32 (10-bit mantissa), f32 accumulation (PyTorch's TF32);
//   k3xTF32   each operand split x = hi + lo (both TF32), hi lo + lo hi + hi hi: about fp32
//             accuracy (the error of the products ~2^-21 relative) at a third of TF32's rate;
//   kBF16     operands rounded to bf16 (8-bit mantissa), f32 accumulation (m16n8k16): for the
//             bf16 precision mode (operands arrive as float32 here).
// Limits: 1 <= d <= 128, any dv (value columns in 64-wide chunks over the grid), any N >= 1.
enum class AttnMath { kTF32, k3xTF32, kBF16 };
constexpr int64_t kAttnMmaMaxD = 128;
const char* attn_math_name(AttnMath m);

void attention_forward_mma_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                                float* o, float* lse, const float* gamma, const float* x, float* y,
                                AttnMath math, cudaStream_t stream);
// Same arguments as attention_backward_cuda.
void attention_backward_mma_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                                 const float* o, const float* lse, const float* dy,
                                 const float* scale, float* dq, float* dk, float* dv, float* dgamma,
                                 float* drow, void* workspace, size_t workspace_bytes,
                                 AttnMath math, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// CUDA, materialised version (any d and dv): S = Q K^T and the softmax as (B, Nq, Nk) buffers,
// the five products by cuBLAS (batched SGEMM, strided operands), one block per softmax row.
// Faster than the tiled kernels wherever its buffers fit (docs/kernels/attention.md): the engine
// picks it when B Nq Nk floats are at most attention_gemm_max_bytes() (engine/device.h), or when d
// or dv exceed the tiled kernels' limits. Forward scratch: s (B Nq Nk floats). Backward scratch:
// p and dp (B Nq Nk floats each), drow (B Nq) and the dgamma reduction's workspace; o is read only
// for dgamma.
void attention_forward_gemm_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                                 float* o, float* lse, const float* gamma, const float* x, float* y,
                                 float* s, cublasHandle_t handle, cudaStream_t stream);
void attention_backward_gemm_cuda(const AttnDims& a, const float* q, const float* k, const float* v,
                                  const float* o, const float* lse, const float* dy,
                                  const float* scale, float* dq, float* dk, float* dv,
                                  float* dgamma, float* drow, float* p, float* dp, void* workspace,
                                  size_t workspace_bytes, cublasHandle_t handle,
                                  cudaStream_t stream);

}  // namespace gan::kernels
