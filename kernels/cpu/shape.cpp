// Concat/split, pooling and resizing on the CPU. Pooling and resizing run the reference's loops
// (one output element at a time, in double) on one image per task, images in parallel: each
// image's result is the reference's, whatever the thread count.
#include <cstring>

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

Pool2dGeom one_image(Pool2dGeom g) {
  g.n = 1;
  return g;
}

}  // namespace

void max_pool2d_forward_f32(const Pool2dGeom& g, const float* x, float* y) {
  const Pool2dGeom g1 = one_image(g);
  const int64_t xs = g.h * g.w * g.c, ys = g.out_h() * g.out_w() * g.c;
  per_image(g.n, [&](int64_t b) { max_pool2d_forward_cpu(g1, x + b * xs, y + b * ys); });
}

void max_pool2d_backward_f32(const Pool2dGeom& g, const float* x, const float* dy, float* dx) {
  const Pool2dGeom g1 = one_image(g);
  const int64_t xs = g.h * g.w * g.c, ys = g.out_h() * g.out_w() * g.c;
  per_image(g.n,
            [&](int64_t b) { max_pool2d_backward_cpu(g1, x + b * xs, dy + b * ys, dx + b * xs); });
}

void avg_pool2d_forward_f32(const Pool2dGeom& g, const float* x, float* y) {
  const Pool2dGeom g1 = one_image(g);
  const int64_t xs = g.h * g.w * g.c, ys = g.out_h() * g.out_w() * g.c;
  per_image(g.n, [&](int64_t b) { avg_pool2d_forward_cpu(g1, x + b * xs, y + b * ys); });
}

void avg_pool2d_backward_f32(const Pool2dGeom& g, const float* dy, float* dx) {
  const Pool2dGeom g1 = one_image(g);
  const int64_t xs = g.h * g.w * g.c, ys = g.out_h() * g.out_w() * g.c;
  per_image(g.n, [&](int64_t b) { avg_pool2d_backward_cpu(g1, dy + b * ys, dx + b * xs); });
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
