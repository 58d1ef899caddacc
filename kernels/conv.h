// 2-D convolution (cross-correlation, as PyTorch and cuDNN compute it) on NHWC activations:
//   x (N, H, W, C), w (K, R, S, C) -> y (N, P, Q, K)
//   y[n, p, q, k] = sum_{r, s, c} x[n, p*sh - ph + r*dh, q*sw - pw + s*dw, c] * w[k, r, s, c]
// (positions outside x read as 0), P = (H + 2 ph - dh (R - 1) - 1) / sh + 1, likewise Q.
// Its two adjoints give the gradients, and the transposed convolution is the first of them:
//   backward data:   dx = conv^T(dy, w)         (conv_transpose2d's forward)
//   backward filter: dw = sum_{n,p,q} dy (x) x  (outer products over the output positions)
// The CPU references below are the definition (plain loops, double accumulation). The GPU runs
// cuDNN (kernels/conv_cudnn.h) with the same ConvGeom.
#pragma once

#include <cstdint>
#include <vector>

namespace gan::kernels {

struct ConvGeom {
  int64_t n = 0, h = 0, w = 0, c = 0;  // input
  int64_t k = 0, r = 0, s = 0;         // filter (K, R, S, C)
  int64_t p = 0, q = 0;                // output spatial size
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;

  int64_t x_numel() const { return n * h * w * c; }
  int64_t w_numel() const { return k * r * s * c; }
  int64_t y_numel() const { return n * p * q * k; }
};

// Calls f(ih, iw, r, s) for every filter tap of output position (p, q) that lands inside x.
template <class F>
inline void for_each_tap(const ConvGeom& g, int64_t p, int64_t q, F&& f) {
  for (int64_t r = 0; r < g.r; ++r) {
    const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h;
    if (ih < 0 || ih >= g.h) continue;
    for (int64_t s = 0; s < g.s; ++s) {
      const int64_t iw = q * g.stride_w - g.pad_w + s * g.dil_w;
      if (iw < 0 || iw >= g.w) continue;
      f(ih, iw, r, s);
    }
  }
}

// x (N, H, W, C), w (K, R, S, C) -> y (N, P, Q, K), overwritten.
template <class T>
void conv_forward_cpu(const ConvGeom& g, const T* x, const T* w, T* y) {
  std::vector<double> acc(size_t(g.k > 0 ? g.k : 1));
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t p = 0; p < g.p; ++p)
      for (int64_t q = 0; q < g.q; ++q) {
        for (auto& a : acc) a = 0;
        for_each_tap(g, p, q, [&](int64_t ih, int64_t iw, int64_t r, int64_t s) {
          const T* xp = x + ((n * g.h + ih) * g.w + iw) * g.c;
          for (int64_t k = 0; k < g.k; ++k) {
            const T* wp = w + ((k * g.r + r) * g.s + s) * g.c;
            double d = 0;
            for (int64_t c = 0; c < g.c; ++c) d += double(xp[c]) * double(wp[c]);
            acc[size_t(k)] += d;
          }
        });
        T* yp = y + ((n * g.p + p) * g.q + q) * g.k;
        for (int64_t k = 0; k < g.k; ++k) yp[k] = T(acc[size_t(k)]);
      }
}

// dy (N, P, Q, K), w (K, R, S, C) -> dx (N, H, W, C), overwritten.
template <class T>
void conv_backward_data_cpu(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  std::vector<double> acc(size_t(g.x_numel()), 0.0);
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t p = 0; p < g.p; ++p)
      for (int64_t q = 0; q < g.q; ++q) {
        const T* dyp = dy + ((n * g.p + p) * g.q + q) * g.k;
        for_each_tap(g, p, q, [&](int64_t ih, int64_t iw, int64_t r, int64_t s) {
          double* ap = acc.data() + ((n * g.h + ih) * g.w + iw) * g.c;
          for (int64_t k = 0; k < g.k; ++k) {
            const double d = double(dyp[k]);
            const T* wp = w + ((k * g.r + r) * g.s + s) * g.c;
            for (int64_t c = 0; c < g.c; ++c) ap[c] += d * double(wp[c]);
          }
        });
      }
  for (int64_t i = 0; i < g.x_numel(); ++i) dx[i] = T(acc[size_t(i)]);
}

// x (N, H, W, C), dy (N, P, Q, K) -> dw (K, R, S, C): overwritten, or added to when accumulate.
template <class T>
void conv_backward_filter_cpu(const ConvGeom& g, const T* x, const T* dy, T* dw, bool accumulate) {
  std::vector<double> acc(size_t(g.w_numel()), 0.0);
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t p = 0; p < g.p; ++p)
      for (int64_t q = 0; q < g.q; ++q) {
        const T* dyp = dy + ((n * g.p + p) * g.q + q) * g.k;
        for_each_tap(g, p, q, [&](int64_t ih, int64_t iw, int64_t r, int64_t s) {
          const T* xp = x + ((n * g.h + ih) * g.w + iw) * g.c;
          for (int64_t k = 0; k < g.k; ++k) {
            const double d = double(dyp[k]);
            double* ap = acc.data() + ((k * g.r + r) * g.s + s) * g.c;
            for (int64_t c = 0; c < g.c; ++c) ap[c] += d * double(xp[c]);
          }
        });
      }
  for (int64_t i = 0; i < g.w_numel(); ++i)
    dw[i] = T((accumulate ? double(dw[i]) : 0.0) + acc[size_t(i)]);
}

}  // namespace gan::kernels
