// 2x2 max pooling with stride 2 on NHWC activations (the official SAGAN attention pools its keys
// and values this way): x (N, H, W, C) -> y (N, H/2, W/2, C), H and W even.
// Backward routes each output gradient to the first maximum of its window (row-major order), as
// PyTorch's max_pool2d does; the window's index is recomputed from x (nothing is saved but x).
// NaN: a window with a NaN yields NaN (and its gradient goes to the first NaN).
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace gan::kernels {

// Index 0..3 of the first maximum of the window values (NaN counts as the maximum).
template <class T>
inline int argmax4(const T (&w)[4]) {
  int best = 0;
  for (int i = 1; i < 4; ++i) {
    if (std::isnan(double(w[best]))) break;
    if (std::isnan(double(w[i])) || w[i] > w[best]) best = i;
  }
  return best;
}

template <class T>
void max_pool2x2_forward_cpu(const T* x, int64_t n, int64_t h, int64_t w, int64_t c, T* y) {
  const int64_t ho = h / 2, wo = w / 2;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j)
        for (int64_t ch = 0; ch < c; ++ch) {
          const T win[4] = {x[((b * h + 2 * i) * w + 2 * j) * c + ch],
                            x[((b * h + 2 * i) * w + 2 * j + 1) * c + ch],
                            x[((b * h + 2 * i + 1) * w + 2 * j) * c + ch],
                            x[((b * h + 2 * i + 1) * w + 2 * j + 1) * c + ch]};
          y[((b * ho + i) * wo + j) * c + ch] = win[argmax4(win)];
        }
}

// dy (N, H/2, W/2, C) -> dx (N, H, W, C), overwritten.
template <class T>
void max_pool2x2_backward_cpu(const T* x, const T* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                              T* dx) {
  const int64_t ho = h / 2, wo = w / 2;
  for (int64_t e = 0; e < n * h * w * c; ++e) dx[e] = T(0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j)
        for (int64_t ch = 0; ch < c; ++ch) {
          const int64_t idx[4] = {((b * h + 2 * i) * w + 2 * j) * c + ch,
                                  ((b * h + 2 * i) * w + 2 * j + 1) * c + ch,
                                  ((b * h + 2 * i + 1) * w + 2 * j) * c + ch,
                                  ((b * h + 2 * i + 1) * w + 2 * j + 1) * c + ch};
          const T win[4] = {x[idx[0]], x[idx[1]], x[idx[2]], x[idx[3]]};
          dx[idx[argmax4(win)]] = dy[((b * ho + i) * wo + j) * c + ch];
        }
}

void max_pool2x2_forward_cuda(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, float* y,
                              cudaStream_t stream);
void max_pool2x2_backward_cuda(const float* x, const float* dy, int64_t n, int64_t h, int64_t w,
                               int64_t c, float* dx, cudaStream_t stream);

}  // namespace gan::kernels
