// The head of a projection discriminator (Miyato & Koyama 2018; SAGAN's and StudioGAN's "PD") in
// one op: the linear output layer plus the class projection <embedding(y), h>.
//
//   h (B, C) features, w (C) the linear layer's weight, bias (1) or none, y (B, K) the labels as
//   one-hot rows (or any weights), e (K, C) the class embedding:
//     v_bc   = w_c + sum over k with y_bk != 0 of y_bk e_kc
//     out_b  = bias + sum_c h_bc v_bc
//   Terms with y_bk == 0 are skipped, as an embedding lookup reads only its class's row: a NaN in
//   an unselected row of e does not reach the output. For one-hot y this is
//   out_b = linear(h_b) + <e_(y_b), h_b>, what StudioGAN computes with nn.Embedding.
//
// Backward, with g (B) the output's gradient:
//   dh_bc  = g_b v_bc
//   dw_c   = sum_b g_b h_bc                  dbias = sum_b g_b
//   de_kc  = sum over b with y_bk != 0 of y_bk g_b h_bc   (0 for classes no row selects)
//   dy_bk  = g_b sum_c e_kc h_bc              (every k: the derivative does not skip)
//
// The references below accumulate in double. The CPU backend (kernels/cpu/) computes rows (out,
// dh, dy) and columns (dw, de) in float over the threads. CUDA: the forward is one block per row
// (a warp finds the row's one selected class with ballots; rows with several go through all
// classes), the backward one block per row for dh (which also records each row's selected class)
// and one thread per column for dw, dbias and de, each summing its rows in order (deterministic, no
// atomics; de is zeroed first). dy, needed only when the labels require a gradient, is one warp
// per (b, k).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace gan::kernels {

// v_bc (double) of row b, column c.
template <class T>
double projection_head_weight(const T* w, const T* yr, const T* e, int64_t C, int64_t K,
                              int64_t c) {
  double v = double(w[c]);
  for (int64_t k = 0; k < K; ++k)
    if (yr[k] != T(0)) v += double(yr[k]) * double(e[k * C + c]);
  return v;
}

// out_b for rows [b0, b1).
template <class T>
void projection_head_forward_rows_cpu(const T* h, const T* w, const T* bias, const T* y, const T* e,
                                      int64_t C, int64_t K, int64_t b0, int64_t b1, T* out) {
  for (int64_t b = b0; b < b1; ++b) {
    double s = bias ? double(bias[0]) : 0.0;
    for (int64_t c = 0; c < C; ++c)
      s += double(h[b * C + c]) * projection_head_weight(w, y + b * K, e, C, K, c);
    out[b] = T(s);
  }
}

// dh and dy (each may be null) for rows [b0, b1).
template <class T>
void projection_head_backward_rows_cpu(const T* h, const T* w, const T* y, const T* e, const T* g,
                                       int64_t C, int64_t K, int64_t b0, int64_t b1, T* dh, T* dy) {
  for (int64_t b = b0; b < b1; ++b) {
    const double gb = double(g[b]);
    if (dh)
      for (int64_t c = 0; c < C; ++c)
        dh[b * C + c] = T(gb * projection_head_weight(w, y + b * K, e, C, K, c));
    if (dy)
      for (int64_t k = 0; k < K; ++k) {
        double s = 0;
        for (int64_t c = 0; c < C; ++c) s += double(e[k * C + c]) * double(h[b * C + c]);
        dy[b * K + k] = T(gb * s);
      }
  }
}

// dw and de (each may be null) for columns [c0, c1) (de: those columns of every class's row).
template <class T>
void projection_head_backward_cols_cpu(const T* h, const T* y, const T* g, int64_t B, int64_t C,
                                       int64_t K, int64_t c0, int64_t c1, T* dw, T* de) {
  for (int64_t c = c0; c < c1; ++c) {
    if (dw) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b) s += double(g[b]) * double(h[b * C + c]);
      dw[c] = T(s);
    }
    if (de)
      for (int64_t k = 0; k < K; ++k) {
        double s = 0;
        for (int64_t b = 0; b < B; ++b)
          if (y[b * K + k] != T(0)) s += double(y[b * K + k]) * double(g[b]) * double(h[b * C + c]);
        de[k * C + c] = T(s);
      }
  }
}

template <class T>
void projection_head_forward_cpu(const T* h, const T* w, const T* bias, const T* y, const T* e,
                                 int64_t B, int64_t C, int64_t K, T* out) {
  projection_head_forward_rows_cpu(h, w, bias, y, e, C, K, int64_t(0), B, out);
}

// Every output pointer may be null (that gradient is not computed).
template <class T>
void projection_head_backward_cpu(const T* h, const T* w, const T* y, const T* e, const T* g,
                                  int64_t B, int64_t C, int64_t K, T* dh, T* dw, T* dbias, T* de,
                                  T* dy) {
  if (dh || dy) projection_head_backward_rows_cpu(h, w, y, e, g, C, K, int64_t(0), B, dh, dy);
  if (dw || de) projection_head_backward_cols_cpu(h, y, g, B, C, K, int64_t(0), C, dw, de);
  if (dbias) {
    double s = 0;
    for (int64_t b = 0; b < B; ++b) s += double(g[b]);
    *dbias = T(s);
  }
}

// CUDA, float32. bias may be null. sel is scratch of B ints (each row's selected class).
void projection_head_forward_cuda(const float* h, const float* w, const float* bias, const float* y,
                                  const float* e, int64_t B, int64_t C, int64_t K, float* out,
                                  cudaStream_t stream);
void projection_head_backward_cuda(const float* h, const float* w, const float* y, const float* e,
                                   const float* g, int64_t B, int64_t C, int64_t K, float* dh,
                                   float* dw, float* dbias, float* de, float* dy, int* sel,
                                   cudaStream_t stream);

}  // namespace gan::kernels
