// Concat/split, pooling and resizing on the CPU, one image per task. Pooling runs over all
// channels of a pixel at once (vectorised); resizing runs the reference's loops (one output
// element at a time, in double) on each image: its result is the reference's, whatever the
// thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace gan::kernels::cpu {

void concat_f32(int count, const float* const* xs, const int64_t* widths, int64_t rows, float* y) {
  int64_t total = 0;
  for (int j = 0; j < count; ++j) total += widths[j];
  parallel_for(rows, std::max<int64_t>(1, grain() / std::max<int64_t>(total, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r) {
                   int64_t off = 0;
                   for (int j = 0; j < count; ++j) {
                     std::memcpy(y + r * total + off, xs[j] + r * widths[j],
                                 size_t(widths[j]) * sizeof(float));
                     off += widths[j];
                   }
                 }
               });
}

void split_f32(int count, const float* dy, const int64_t* widths, int64_t rows, float* const* dxs) {
  int64_t total = 0;
  for (int j = 0; j < count; ++j) total += widths[j];
  parallel_for(rows, std::max<int64_t>(1, grain() / std::max<int64_t>(total, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r) {
                   int64_t off = 0;
                   for (int j = 0; j < count; ++j) {
                     if (dxs[j])
                       std::memcpy(dxs[j] + r * widths[j], dy + r * total + off,
                                   size_t(widths[j]) * sizeof(float));
                     off += widths[j];
                   }
                 }
               });
}

namespace {

// f(image) for every image of the batch, in parallel.
template <class F>
void per_image(int64_t n, F&& f) {
  parallel_blocks(n, [&](int64_t b) { f(b); });
}

}  // namespace

namespace {

// Window (i, j)'s valid rows [y0, y1) and columns [x0, x1).
struct Window {
  int64_t y0, y1, x0, x1;
};
Window window(const Pool2dGeom& g, int64_t i, int64_t j) {
  const int64_t h0 = i * g.sh - g.ph, w0 = j * g.sw - g.pw;
  return {std::max<int64_t>(h0, 0), std::min<int64_t>(h0 + g.kh, g.h), std::max<int64_t>(w0, 0),
          std::min<int64_t>(w0 + g.kw, g.w)};
}

// best[c] = the maximum of best[c] and v[c], NaN winning (the first NaN stays), as the
// reference: padding never wins.
GAN_CPU_SIMD void max_into(float* best, const float* v, int64_t c) {
  for (int64_t k = 0; k < c; ++k) {
    const float b = best[k], x = v[k];
    best[k] = b != b ? b : ((x != x || x > b) ? x : b);
  }
}

GAN_CPU_SIMD void add_into(float* acc, const float* v, int64_t c) {
  for (int64_t k = 0; k < c; ++k) acc[k] += v[k];
}

GAN_CPU_SIMD void scale_into(float* out, const float* acc, int64_t c, float s) {
  for (int64_t k = 0; k < c; ++k) out[k] = acc[k] * s;
}

GAN_CPU_SIMD void axpy_into(float* acc, const float* v, int64_t c, float s) {
  for (int64_t k = 0; k < c; ++k) acc[k] += v[k] * s;
}

}  // namespace

// Nearest upsampling: each input row of pixels copied s times along the row, that output row
// copied s - 1 more times (one image per task). Its adjoint sums each s x s window in row-major
// order, all channels at once.
void upsample_nearest_forward_f32(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, int s,
                                  float* y) {
  const int64_t Q = w * s, row = Q * c;
  per_image(n, [&](int64_t b) {
    for (int64_t i = 0; i < h; ++i) {
      float* out = y + (b * h * s + i * s) * row;
      const float* in = x + (b * h + i) * w * c;
      for (int64_t j = 0; j < w; ++j)
        for (int e = 0; e < s; ++e) std::copy(in + j * c, in + (j + 1) * c, out + (j * s + e) * c);
      for (int a = 1; a < s; ++a) std::copy(out, out + row, out + a * row);
    }
  });
}

void upsample_nearest_backward_f32(const float* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                   int s, float* dx) {
  const int64_t Q = w * s;
  per_image(n, [&](int64_t b) {
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        float* acc = dx + ((b * h + i) * w + j) * c;
        std::fill(acc, acc + c, 0.f);
        for (int a = 0; a < s; ++a)
          for (int e = 0; e < s; ++e)
            add_into(acc, dy + ((b * h * s + i * s + a) * Q + j * s + e) * c, c);
      }
  });
}

// Pooling on NHWC: per output pixel, the window's taps over all channels at once (vectorised),
// one image per task. Window sums in float (at most kh kw terms).
void max_pool2d_forward_f32(const Pool2dGeom& g, const float* x, float* y) {
  const int64_t P = g.out_h(), Q = g.out_w(), C = g.c;
  const int64_t xs = g.h * g.w * C, ys = P * Q * C;
  per_image(g.n, [&](int64_t b) {
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j) {
        float* out = y + b * ys + (i * Q + j) * C;
        std::fill(out, out + C, -INFINITY);
        const Window w = window(g, i, j);
        for (int64_t yy = w.y0; yy < w.y1; ++yy)
          for (int64_t xx = w.x0; xx < w.x1; ++xx)
            max_into(out, x + b * xs + (yy * g.w + xx) * C, C);
      }
  });
}

void max_pool2d_backward_f32(const Pool2dGeom& g, const float* x, const float* dy, float* dx) {
  const int64_t P = g.out_h(), Q = g.out_w(), C = g.c;
  const int64_t xs = g.h * g.w * C, ys = P * Q * C;
  per_image(g.n, [&](int64_t b) {
    float* dxb = dx + b * xs;
    std::fill(dxb, dxb + xs, 0.f);
    const float* xb = x + b * xs;
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j) {
        const Window w = window(g, i, j);
        const float* dyp = dy + b * ys + (i * Q + j) * C;
        for (int64_t c = 0; c < C; ++c) {  // the first maximum (a NaN first) gets the gradient
          int64_t at = -1;
          float best = 0.f;
          for (int64_t yy = w.y0; yy < w.y1; ++yy)
            for (int64_t xx = w.x0; xx < w.x1; ++xx) {
              const int64_t e = (yy * g.w + xx) * C + c;
              const float v = xb[e];
              if (at >= 0 && best != best) continue;
              if (at < 0 || v != v || v > best) best = v, at = e;
            }
          if (at >= 0) dxb[at] += dyp[c];
        }
      }
  });
}

void avg_pool2d_forward_f32(const Pool2dGeom& g, const float* x, float* y) {
  const int64_t P = g.out_h(), Q = g.out_w(), C = g.c;
  const int64_t xs = g.h * g.w * C, ys = P * Q * C;
  per_image(g.n, [&](int64_t b) {
    std::vector<float> acc(static_cast<size_t>(C));
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j) {
        std::fill(acc.begin(), acc.end(), 0.f);
        const Window w = window(g, i, j);
        for (int64_t yy = w.y0; yy < w.y1; ++yy)
          for (int64_t xx = w.x0; xx < w.x1; ++xx)
            add_into(acc.data(), x + b * xs + (yy * g.w + xx) * C, C);
        scale_into(y + b * ys + (i * Q + j) * C, acc.data(), C,
                   float(1.0 / double(avg_pool_divisor(g, i, j))));
      }
  });
}

void avg_pool2d_backward_f32(const Pool2dGeom& g, const float* dy, float* dx) {
  const int64_t P = g.out_h(), Q = g.out_w(), C = g.c;
  const int64_t xs = g.h * g.w * C, ys = P * Q * C;
  per_image(g.n, [&](int64_t b) {
    float* dxb = dx + b * xs;
    std::fill(dxb, dxb + xs, 0.f);
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j) {
        const Window w = window(g, i, j);
        const float s = float(1.0 / double(avg_pool_divisor(g, i, j)));
        const float* dyp = dy + b * ys + (i * Q + j) * C;
        for (int64_t yy = w.y0; yy < w.y1; ++yy)
          for (int64_t xx = w.x0; xx < w.x1; ++xx) axpy_into(dxb + (yy * g.w + xx) * C, dyp, C, s);
      }
  });
}

void resample_forward_f32(Resample kind, const float* x, int64_t n, int64_t h, int64_t w, int64_t c,
                          int64_t P, int64_t Q, float* y) {
  const int64_t xs = h * w * c, ys = P * Q * c;
  per_image(n, [&](int64_t b) {
    const float* xi = x + b * xs;
    float* yi = y + b * ys;
    switch (kind) {
      case Resample::kAdaptiveAvg:
        return adaptive_avg_pool2d_forward_cpu(xi, 1, h, w, c, P, Q, yi);
      case Resample::kBilinear:
        return resize_bilinear_forward_cpu(xi, 1, h, w, c, P, Q, yi, true);
      case Resample::kBilinearCorners:
        return resize_bilinear_forward_cpu(xi, 1, h, w, c, P, Q, yi, false);
      case Resample::kBicubicAA:
        return resize_bicubic_aa_forward_cpu(xi, 1, h, w, c, P, Q, yi);
    }
  });
}

void resample_backward_f32(Resample kind, const float* dy, int64_t n, int64_t h, int64_t w,
                           int64_t c, int64_t P, int64_t Q, float* dx) {
  const int64_t xs = h * w * c, ys = P * Q * c;
  per_image(n, [&](int64_t b) {
    const float* dyi = dy + b * ys;
    float* dxi = dx + b * xs;
    switch (kind) {
      case Resample::kAdaptiveAvg:
        return adaptive_avg_pool2d_backward_cpu(dyi, 1, h, w, c, P, Q, dxi);
      case Resample::kBilinear:
        return resize_bilinear_backward_cpu(dyi, 1, h, w, c, P, Q, dxi, true);
      case Resample::kBilinearCorners:
        return resize_bilinear_backward_cpu(dyi, 1, h, w, c, P, Q, dxi, false);
      case Resample::kBicubicAA:
        return resize_bicubic_aa_backward_cpu(dyi, 1, h, w, c, P, Q, dxi);
    }
  });
}

}  // namespace gan::kernels::cpu
